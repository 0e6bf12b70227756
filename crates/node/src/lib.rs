//! napi-rs binding of yolo-loss: converts JavaScript values to the core's types, calls the core, converts back.
//!
//! This layer is deliberately thin. It is consumed only by the TypeScript facade (`index.ts`), which validates
//! the JavaScript-level structure first and gives the public names; the core validates every number.
//!
//! * Inputs: `Float32Array`s are read in place (the slice points into the caller's `ArrayBuffer`, nothing is
//!   copied) by the synchronous methods. The asynchronous ones copy their inputs once on the JavaScript thread, so
//!   that nothing the caller does while the work runs on the libuv pool (writing, transferring or resizing the
//!   buffer) can reach the computation.
//! * Outputs of every synchronous function: `Float32Array`s whose `ArrayBuffer`s V8 allocates and owns. The task
//!   losses' gradients are created zero-filled before the core runs, which writes into them (`value_and_grad_into`);
//!   every other result (loss vectors, building blocks, `bboxDecode`, `preprocess`) is copied in from the core's
//!   `Vec`. V8 frees that memory when it collects the arrays, whatever the event loop does, so a synchronous loop
//!   stays bounded. (External `ArrayBuffer`s, which own a Rust `Vec`, are freed by finalizers that Node defers
//!   until the event loop turns: a loop that never yields kept every result.)
//! * Caller-owned outputs: `valueAndGrad(..., out)` and its asynchronous form write the gradients into the caller's
//!   own `Float32Array`s instead (`tasks::CallerGrads`), after refusing any that do not fit or that share memory
//!   with an input or with each other; nothing is allocated for the gradients, and the core writes every element
//!   (`value_and_grad_overwrite`), so they need no zeroing pass first.
//! * Outputs of the asynchronous methods: `Float32Array`s that take ownership of the core's `Vec<f32>` (external
//!   `ArrayBuffer`s, no copy). Their finalizers run on the event loop, which an asynchronous caller turns between
//!   calls by awaiting.
//! * Errors: a JavaScript `Error` whose `code` is [`ErrorCode::as_str`] (`ERR_SHAPE_MISMATCH`, ...) and whose
//!   message is the core's (argument, expected, got).
//! * Panics: every call into the core runs under [`std::panic::catch_unwind`]; a panic becomes `ERR_INTERNAL`.
//!   (This relies on `panic = "unwind"`, the default, in the profiles that build this crate.)

// napi-derive registers `#[napi]` items with Node only outside `cfg(test)`: in this crate's unit-test build the
// exported functions and the helpers only they use have no caller, which is expected, not dead code.
#![cfg_attr(test, allow(dead_code))]

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use napi::bindgen_prelude::{Float32Array, FromNapiValue};
use napi::{sys, Env};
use napi_derive::napi;
use yolo_loss_core::detection::preprocess as core_preprocess;
use yolo_loss_core::{DetectionConfig, ErrorCode, Hyp, LossError, LossOutput, TensorRef};
use yolo_loss_cuda::Device;

mod blocks;
mod tasks;

// ------------------------------------------------------------------------------------------------------------
// Errors

/// The status of every error this binding throws; napi-rs puts it on the JavaScript error as `code`.
pub struct Code(&'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

type CoreResult<T> = yolo_loss_core::Result<T>;

fn to_js(e: LossError) -> napi::Error<Code> {
    napi::Error::new(Code(e.code.as_str()), e.message)
}

fn invalid(message: String) -> LossError {
    LossError::new(ErrorCode::InvalidArgument, message)
}

/// Runs `f`, turning a panic into `ERR_INTERNAL` so that no panic ever unwinds into Node.
fn guarded<T>(what: &str, f: impl FnOnce() -> CoreResult<T>) -> CoreResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic payload".to_string()
            };
            Err(LossError::new(
        ErrorCode::Internal,
        format!("{what}: internal error in yolo-loss (caught panic: {detail}); please report this with the input shapes"),
      ))
        }
    }
}

/// [`guarded`], with the error made ready for JavaScript: the body of every synchronous native function.
fn guarded_js<T>(what: &str, f: impl FnOnce() -> CoreResult<T>) -> napi::Result<T, Code> {
    guarded(what, f).map_err(to_js)
}

// ------------------------------------------------------------------------------------------------------------
// Plain numbers from JavaScript

/// A JavaScript number that must be a non-negative integer (a dimension, a count).
fn to_usize(name: &str, v: f64) -> CoreResult<usize> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as usize)
    } else {
        Err(invalid(format!("{name}: expected a non-negative integer, got {v}")))
    }
}

/// A shape given as JavaScript numbers.
fn to_dims(name: &str, shape: &[f64]) -> CoreResult<Vec<usize>> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            to_usize(&format!("{name}.shape[{i}]"), d).map_err(|_| {
                LossError::shape(format!("{name}.shape[{i}]: expected a non-negative integer dimension, got {d}"))
            })
        })
        .collect()
}

/// Checks `data.len() == product(shape)` (without overflowing) and returns the view.
fn view<'a>(name: &str, data: &'a [f32], dims: &'a [usize]) -> CoreResult<TensorRef<'a, f32>> {
    let product = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if product != Some(data.len()) {
        return Err(LossError::shape(format!(
            "{name}: expected data of length equal to the product of shape {}, got {}",
            yolo_loss_core::tensor::fmt_shape(dims),
            data.len()
        )));
    }
    Ok(TensorRef::new(data, dims))
}

/// The most elements an output built from a size argument (not from input data) may have. A failed allocation
/// aborts the process, which no guard can catch, so sizes that only a number decides are bounded up front.
const MAX_BUILT_ELEMENTS: usize = 1 << 31;

/// The largest `batchSize` `preprocess` accepts (a per-image table is allocated for it).
const MAX_BATCH_SIZE: usize = 1 << 24;

/// Bounds the padded `[B, M, cols]` table of `preprocess` (M ≤ the number of label rows `n`).
fn check_table_size(batch_size: usize, n: usize, cols: usize) -> CoreResult<()> {
    if batch_size > MAX_BATCH_SIZE {
        return Err(invalid(format!("batchSize: expected at most {MAX_BATCH_SIZE}, got {batch_size}")));
    }
    match batch_size.checked_mul(n).and_then(|x| x.checked_mul(cols)) {
        Some(total) if total <= MAX_BUILT_ELEMENTS => Ok(()),
        _ => Err(invalid(format!(
            "batchSize: expected a padded table [batchSize, M, {cols}] (M ≤ {n} labels) of at most {MAX_BUILT_ELEMENTS} elements, got batchSize {batch_size}"
        ))),
    }
}

fn dims_to_js(dims: &[usize]) -> Vec<f64> {
    dims.iter().map(|&d| d as f64).collect()
}

// ------------------------------------------------------------------------------------------------------------
// Tensor arguments

/// One tensor argument of a native call: its name in error messages, its data and its shape as JavaScript
/// numbers. The synchronous functions borrow the caller's `Float32Array` (no copy).
pub(crate) struct Arg<'a> {
    name: Cow<'a, str>,
    data: &'a [f32],
    shape: &'a [f64],
}

fn arg<'a>(name: impl Into<Cow<'a, str>>, t: &'a NativeTensor) -> Arg<'a> {
    // `&*t.data` is the caller's memory: no copy.
    Arg { name: name.into(), data: &t.data, shape: &t.shape }
}

/// Checks tensor arguments as every native function does, every shape first (integer dimensions), then every
/// length against its shape, and hands their views to `f`, in order.
fn with_views<R>(args: &[Arg<'_>], f: impl FnOnce(&[TensorRef<'_, f32>]) -> CoreResult<R>) -> CoreResult<R> {
    let dims = args.iter().map(|a| to_dims(&a.name, a.shape)).collect::<CoreResult<Vec<_>>>()?;
    let views = args.iter().zip(&dims).map(|(a, d)| view(&a.name, a.data, d)).collect::<CoreResult<Vec<_>>>()?;
    f(&views)
}

// ------------------------------------------------------------------------------------------------------------
// Objects crossing the boundary

/// `{ data, shape }`: a row-major float32 tensor. Inputs are borrowed, outputs are fresh.
#[napi(object)]
pub struct NativeTensor {
    pub data: Float32Array,
    pub shape: Vec<f64>,
}

/// A fresh output tensor of a synchronous function: a V8-owned copy of `data` (see [`js_copy`]).
fn out_tensor(env: &Env, data: &[f32], dims: &[usize]) -> CoreResult<NativeTensor> {
    Ok(NativeTensor { data: js_copy(env, data)?, shape: dims_to_js(dims) })
}

/// [`out_tensor`] of values converted on the way (integers, flags): written straight into the V8-owned array.
fn out_tensor_from(env: &Env, values: impl ExactSizeIterator<Item = f32>, dims: &[usize]) -> CoreResult<NativeTensor> {
    let mut out = js_zeros(env, values.len())?;
    for (o, v) in out.as_mut_slice().iter_mut().zip(values) {
        *o = v;
    }
    Ok(NativeTensor { data: out.0, shape: dims_to_js(dims) })
}

/// Hyperparameters with every key present (the facade fills in the `default.yaml` values).
#[napi(object)]
pub struct NativeHyp {
    pub box_gain: f64,
    pub cls: f64,
    pub dfl: f64,
    pub pose: f64,
    pub kobj: f64,
    pub overlap_mask: bool,
}

#[napi(object)]
pub struct NativeDetectionConfig {
    pub nc: f64,
    pub reg_max: f64,
    pub strides: Vec<f64>,
    pub tal_topk: f64,
    pub hyp: NativeHyp,
    /// 'cpu' | 'cuda' | 'auto'.
    pub device: String,
}

/// The label part of the batch dict.
#[napi(object)]
pub struct NativeDetBatch {
    pub batch_idx: NativeTensor,
    pub cls: NativeTensor,
    pub bboxes: NativeTensor,
}

#[napi(object)]
pub struct NativeLossOutput {
    pub loss: Float32Array,
    pub loss_items: Float32Array,
    /// One flat gradient per prediction tensor (empty for `call`); shapes are those of the inputs.
    pub grads: Vec<Float32Array>,
}

impl From<LossOutput<f32>> for NativeLossOutput {
    fn from(o: LossOutput<f32>) -> Self {
        NativeLossOutput {
            loss: Float32Array::new(o.loss),
            loss_items: Float32Array::new(o.loss_items),
            grads: o.grads.into_iter().map(Float32Array::new).collect(),
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// V8-owned outputs (the synchronous methods)

/// A `Float32Array` of `len` zeros over a fresh `ArrayBuffer` that V8 allocates and owns (not external).
///
/// `napi_create_arraybuffer` is `v8::ArrayBuffer::New`, whose memory is zero-initialised (Node's allocator zero-fills
/// every allocation except inside `Buffer.allocUnsafe`, which cannot be running while a native call is); the
/// backing store lives outside the V8 heap and never moves. Like a `Vec` allocation, a failed allocation aborts
/// the process, so callers only ask for sizes that input data already occupies.
fn js_zeros(env: &Env, len: usize) -> CoreResult<JsGrad> {
    let failed = |what: &str, detail: String| {
        LossError::new(
            ErrorCode::Internal,
            format!("cannot create an output {what} of {len} float32 values ({detail})"),
        )
    };
    let bytes = len
        .checked_mul(std::mem::size_of::<f32>())
        .ok_or_else(|| failed("ArrayBuffer", "size overflow".to_string()))?;
    let mut buffer = std::ptr::null_mut();
    let mut data = std::ptr::null_mut();
    // SAFETY: plain N-API calls on the JavaScript thread (`env` is this call's); the out-pointers are valid.
    let status = unsafe { sys::napi_create_arraybuffer(env.raw(), bytes, &mut data, &mut buffer) };
    if status != sys::Status::napi_ok {
        return Err(failed("ArrayBuffer", format!("napi status {status}")));
    }
    // SAFETY: `data` is the backing store V8 just allocated for this call, `bytes` long. Huge pages cut the first
    // touch of a 77 MB gradient from ~19 000 page faults to a few dozen (see `yolo_loss_core::alloc`).
    unsafe { yolo_loss_core::alloc::advise_huge_pages(data.cast(), bytes) };
    let mut array = std::ptr::null_mut();
    let status = unsafe {
        sys::napi_create_typedarray(env.raw(), sys::TypedarrayType::float32_array, len, buffer, 0, &mut array)
    };
    if status != sys::Status::napi_ok {
        return Err(failed("Float32Array", format!("napi status {status}")));
    }
    // A strong reference keeps the array alive until it is handed back to JavaScript (or dropped on an error).
    // SAFETY: `array` is the Float32Array just created in this environment.
    unsafe { Float32Array::from_napi_value(env.raw(), array) }
        .map(JsGrad)
        .map_err(|e| failed("Float32Array reference", e.to_string()))
}

/// A V8-owned copy of `data` (the small loss vectors, and results the core returns as a `Vec`).
fn js_copy(env: &Env, data: &[f32]) -> CoreResult<Float32Array> {
    let mut out = js_zeros(env, data.len())?;
    out.as_mut_slice().copy_from_slice(data);
    Ok(out.0)
}

/// A zero-filled V8-owned `Float32Array` created by the current native call, written through
/// [`GradBuffer::as_mut_slice`] before the call returns it.
pub(crate) struct JsGrad(Float32Array);

/// A gradient output the core writes into, as long as its prediction tensor: a fresh zero-filled buffer, or the
/// caller's own `out`.
pub(crate) trait GradBuffer {
    /// Whether the buffer holds zeros when the core gets it (fresh), or anything (a caller's `out`, which holds the
    /// previous step's gradients: the core then writes every element, zeroing only what the loss does not write).
    const ZEROED: bool;
    fn as_mut_slice(&mut self) -> &mut [f32];
}

impl GradBuffer for Vec<f32> {
    const ZEROED: bool = true;
    fn as_mut_slice(&mut self) -> &mut [f32] {
        self
    }
}

impl GradBuffer for &mut [f32] {
    const ZEROED: bool = false;
    fn as_mut_slice(&mut self) -> &mut [f32] {
        self
    }
}

impl GradBuffer for JsGrad {
    const ZEROED: bool = true;
    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: the array was created by this native call and no JavaScript has seen it yet; none runs before the
        // call returns, so nothing else reads or writes the memory while this borrow lives. Its backing store is
        // outside the V8 heap (it does not move) and the strong reference keeps it alive.
        unsafe { self.0.as_mut() }
    }
}

impl JsGrad {
    fn into_array(self) -> Float32Array {
        self.0
    }
}

/// Where a device's kernels come from (`yolo_loss_cuda::KernelSource`).
#[napi(object)]
pub struct NativeCudaKernels {
    /// "sass" (machine code of this build, loaded as it is) or "ptx" (JIT-compiled by the driver).
    pub source: String,
    /// The fatbin part that runs: "sm_90" or "compute_121".
    pub target: String,
    /// True once the device is opened and a loaded kernel's binary version said so; false: the driver's rule
    /// applied to the device's compute capability and this build's SASS list.
    pub confirmed: bool,
}

#[napi(object)]
pub struct NativeCudaDevice {
    /// `device: 'cuda:<ordinal>'`.
    pub ordinal: u32,
    pub name: String,
    /// "8.6".
    pub compute_capability: String,
    pub total_memory_bytes: f64,
    pub usable: bool,
    pub reason: Option<String>,
    pub kernels: Option<NativeCudaKernels>,
}

#[napi(object)]
pub struct NativeCudaAvailability {
    /// Whether `cuda:0` (what 'cuda' and 'auto' use) can run the CUDA backend; its name, or why not.
    pub available: bool,
    pub device_name: Option<String>,
    pub reason: Option<String>,
    /// cuda:0's compute capability and kernel source, when it exists.
    pub compute_capability: Option<String>,
    pub kernels: Option<NativeCudaKernels>,
    /// The newest CUDA the driver supports, "13.0", when a driver answered.
    pub driver_version: Option<String>,
    /// The architectures this build has SASS for ("sm_75", ...), empty without kernels.
    pub sass_architectures: Vec<String>,
    /// Every device the driver reports.
    pub devices: Vec<NativeCudaDevice>,
}

// ------------------------------------------------------------------------------------------------------------
// Devices

/// What the CUDA probe says (`cuda:0`, then every device), without panicking into Node.
#[napi]
pub fn cuda_availability() -> NativeCudaAvailability {
    catch_unwind(cuda_report).unwrap_or_else(|_| NativeCudaAvailability {
        available: false,
        device_name: None,
        reason: Some("the CUDA probe failed (caught panic)".to_string()),
        compute_capability: None,
        kernels: None,
        driver_version: None,
        sass_architectures: Vec::new(),
        devices: Vec::new(),
    })
}

fn cuda_report() -> NativeCudaAvailability {
    let found = yolo_loss_cuda::devices();
    let devices: Vec<NativeCudaDevice> = found.devices.iter().map(native_device).collect();
    let (available, device_name, reason) = match yolo_loss_cuda::availability() {
        yolo_loss_cuda::Availability::Available { device_name } => (true, Some(device_name), None),
        yolo_loss_cuda::Availability::Unavailable { reason } => (false, None, Some(reason)),
    };
    NativeCudaAvailability {
        available,
        device_name,
        reason,
        compute_capability: devices.first().map(|d| d.compute_capability.clone()),
        kernels: found.devices.first().and_then(native_kernels),
        driver_version: found.driver_version.map(|v| format!("{}.{}", v / 1000, v % 1000 / 10)),
        sass_architectures: yolo_loss_cuda::sass_architectures().iter().map(|a| format!("sm_{a}")).collect(),
        devices,
    }
}

/// Where a device's kernels come from: read back from the loaded kernels once the device is opened, the driver's
/// rule before.
fn native_kernels(d: &yolo_loss_cuda::DeviceInfo) -> Option<NativeCudaKernels> {
    let opened = yolo_loss_cuda::opened_gpu(d.ordinal).map(|g| g.kernel_source());
    opened.or(d.kernels).map(|k| NativeCudaKernels {
        source: k.as_str().to_string(),
        target: k.target(),
        confirmed: opened.is_some(),
    })
}

fn native_device(d: &yolo_loss_cuda::DeviceInfo) -> NativeCudaDevice {
    NativeCudaDevice {
        ordinal: d.ordinal as u32,
        name: d.name.clone(),
        compute_capability: format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
        total_memory_bytes: d.total_memory_bytes as f64,
        usable: d.unusable.is_none(),
        reason: d.unusable.clone(),
        kernels: native_kernels(d),
    }
}

/// `options.device` as the CUDA crate's [`Device`]: 'cpu', 'cuda', 'cuda:N' or 'auto' (`Device`'s `FromStr`).
fn parse_device(requested: &str) -> CoreResult<Device> {
    requested.parse::<Device>().map_err(|e| invalid(format!("options.{}", e.message)))
}

/// The CUDA backend's `ERR_CUDA_UNAVAILABLE` says which option asked for CUDA: its message is the reason alone, or,
/// for a task without a CUDA backend, a message about `device:` itself (as the device parser's).
fn cuda_refused(mut e: LossError) -> LossError {
    if e.code == ErrorCode::CudaUnavailable {
        e.message = if e.message.starts_with("device:") {
            format!("options.{}", e.message)
        } else {
            format!("options.device: CUDA was requested but cannot be used: {}", e.message)
        };
    }
    e
}

// ------------------------------------------------------------------------------------------------------------
// The detection family (the task-loss classes are in `tasks`)

fn detection_config(c: &NativeDetectionConfig) -> CoreResult<DetectionConfig> {
    let h = &c.hyp;
    Ok(DetectionConfig {
        nc: to_usize("model.nc", c.nc)?,
        reg_max: to_usize("model.reg_max", c.reg_max)?,
        strides: c.strides.clone(),
        hyp: Hyp {
            box_gain: h.box_gain,
            cls: h.cls,
            dfl: h.dfl,
            pose: h.pose,
            kobj: h.kobj,
            overlap_mask: h.overlap_mask,
        },
        tal_topk: to_usize("tal_topk", c.tal_topk)?,
    })
}

/// The `preprocess` of v8DetectionLoss and v8OBBLoss: checks `batchSize`, `scale` and `targets`, bounds the
/// padded `[B, M, cols]` table, then lets `table` (the core's preprocess) build it.
fn preprocess_table(
    env: &Env,
    targets: &NativeTensor,
    batch_size: f64,
    scale: &[f64],
    cols: usize,
    table: impl FnOnce(TensorRef<'_, f32>, usize, [f32; 4]) -> CoreResult<(Vec<f32>, Vec<usize>)>,
) -> napi::Result<NativeTensor, Code> {
    let (data, dims) = guarded_js("preprocess", || {
        let b = to_usize("batchSize", batch_size)?;
        let s: [f32; 4] = match scale {
            [a, b, c, d] => [*a as f32, *b as f32, *c as f32, *d as f32],
            other => {
                return Err(LossError::shape(format!(
                    "scaleTensor: expected 4 values (W, H, W, H), got {}",
                    other.len()
                )))
            }
        };
        with_views(&[arg("targets", targets)], |t| {
            check_table_size(b, t[0].shape.first().copied().unwrap_or(0), cols)?;
            table(t[0], b, s)
        })
    })?;
    out_tensor(env, &data, &dims).map_err(to_js)
}

/// `preprocess(targets [N,6], batch_size, scale (W,H,W,H))` → `[B, M, 5]`.
#[napi]
pub fn preprocess(
    env: Env,
    targets: NativeTensor,
    batch_size: f64,
    scale: Vec<f64>,
) -> napi::Result<NativeTensor, Code> {
    preprocess_table(&env, &targets, batch_size, &scale, 5, core_preprocess)
}

// ------------------------------------------------------------------------------------------------------------
// Test hook

/// Panics inside the guard and returns what the guard made of it. Used by the JavaScript tests to check that a
/// panic in the core becomes an `ERR_INTERNAL` error instead of crossing into Node. Not part of the public API.
#[doc(hidden)]
#[napi(js_name = "__panicForTest")]
pub fn panic_for_test() -> napi::Result<(), Code> {
    // Keep the deliberate panic out of the test log: no message, no backtrace (the hook only prints; unwinding and
    // catching are unaffected). Real panics keep the default hook, whose report helps to find the bug.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = guarded("__panicForTest", || -> CoreResult<()> { panic!("deliberate panic for the test suite") });
    std::panic::set_hook(previous);
    result.map_err(to_js)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_reject_non_integers_and_negatives() {
        assert_eq!(to_dims("t", &[1.0, 0.0, 3.0]).unwrap(), vec![1, 0, 3]);
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(to_dims("t", &[bad]).unwrap_err().code, ErrorCode::ShapeMismatch, "{bad}");
        }
    }

    #[test]
    fn view_checks_length_without_overflow() {
        let data = [0f32; 6];
        assert!(view("t", &data, &[2, 3]).is_ok());
        assert_eq!(view("t", &data, &[2, 4]).unwrap_err().code, ErrorCode::ShapeMismatch);
        assert_eq!(view("t", &data, &[usize::MAX, 3]).unwrap_err().code, ErrorCode::ShapeMismatch);
    }

    #[test]
    fn guard_turns_panics_into_internal_errors() {
        let e = guarded("x", || -> CoreResult<()> { panic!("boom") }).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("boom"), "{}", e.message);
    }

    #[test]
    fn built_sizes_are_bounded() {
        assert!(check_table_size(16, 100, 5).is_ok());
        assert!(check_table_size(MAX_BATCH_SIZE, 0, 5).is_ok());
        for (b, n) in [(MAX_BATCH_SIZE + 1, 0), (1 << 20, 1 << 10), (usize::MAX, 2)] {
            assert_eq!(check_table_size(b, n, 5).unwrap_err().code, ErrorCode::InvalidArgument);
        }
    }

    #[test]
    fn devices() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), Device::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), Device::Cuda(3));
        assert_eq!(parse_device("auto").unwrap(), Device::Auto);
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:1x"] {
            let e = parse_device(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert_eq!(
                e.message,
                format!(
                    "options.device: expected 'cpu', 'cuda', 'cuda:N' (N a GPU ordinal: 0, 1, ...) or 'auto', \
                     got '{bad}'"
                )
            );
        }
        let e = cuda_refused(LossError::new(ErrorCode::CudaUnavailable, "no driver"));
        assert_eq!(e.message, "options.device: CUDA was requested but cannot be used: no driver");
        assert_eq!(cuda_refused(invalid("x".into())).message, "x");
    }
}
