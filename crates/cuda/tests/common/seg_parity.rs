//! Test bodies of the segmentation losses (v8SegmentationLoss, TVPSegmentLoss), shared by the GPU tests
//! (tests/segmentation.rs) and the emulator tests (src/segmentation/tests.rs), beside the detection bodies of
//! parity.rs (whose synthetic cases and comparisons they reuse). The including module brings a `common` and a
//! `parity` module and `CudaSegmentationLoss`, `CudaTVPSegmentLoss` into scope.

#![allow(dead_code, unused_macros)]

use yolo_loss_core::prompts::TVPSegmentLoss;
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{DetectionConfig, ErrorCode, LossOutput, Result, TaskLoss};

use super::common::{check_loss_output, config, grad_names, levels, load_kind, refs, Fixture, Labels, Lcg, Owned};
use super::parity::{compare_outputs, synthetic, SynthSpec, Synthetic};
use super::{CudaSegmentationLoss, CudaTVPSegmentLoss};

/// The tests of one way of running the kernels (GPU or emulator), as parity.rs's `kernel_tests!`; `$makers`:
/// `fn(test: &str) -> Option<SegMakers>`.
macro_rules! seg_kernel_tests {
    ($makers:ident => $v8:ident, $tvp:ident, $synthetic:ident, $errors:ident) => {
        #[test]
        fn $v8() {
            let Some(mk) = $makers(stringify!($v8)) else { return };
            seg_parity::v8_segmentation_fixtures(&mk);
        }

        #[test]
        fn $tvp() {
            let Some(mk) = $makers(stringify!($tvp)) else { return };
            seg_parity::tvp_segment_fixtures(&mk);
            seg_parity::tvp_segment_synthetic(&mk);
        }

        #[test]
        fn $synthetic() {
            let Some(mk) = $makers(stringify!($synthetic)) else { return };
            seg_parity::synthetic_cases(&mk);
        }

        #[test]
        fn $errors() {
            let Some(mk) = $makers(stringify!($errors)) else { return };
            seg_parity::errors_match_cpu(&mk);
        }
    };
}

/// How the CUDA segmentation losses are built (GPU or emulator).
pub struct SegMakers<'a> {
    pub seg: &'a dyn Fn(DetectionConfig) -> Result<CudaSegmentationLoss>,
    pub tvp: &'a dyn Fn(DetectionConfig) -> Result<CudaTVPSegmentLoss>,
}

/// A segmentation case: level tensors, coefficients, prototypes, labels and GT masks.
pub struct SegCase {
    pub name: String,
    pub cfg: DetectionConfig,
    pub levels: Vec<Owned>,
    pub pred_masks: Owned,
    pub proto: Owned,
    pub labels: Labels,
    pub masks: Owned,
}

impl SegCase {
    fn of(f: &Fixture) -> Self {
        SegCase {
            name: f.name.clone(),
            cfg: config(f),
            levels: levels(f, "preds"),
            pred_masks: Owned::of(f, "preds.pred_masks"),
            proto: Owned::of(f, "preds.proto"),
            labels: Labels::of(f),
            masks: Owned::of(f, "batch.masks"),
        }
    }

    /// Runs `f` on the case's predictions and batch.
    pub fn with<R>(&self, f: impl FnOnce(SegPreds<f32>, &SegBatch<f32>) -> R) -> R {
        let feats = refs(&self.levels);
        let preds = SegPreds { feats: &feats, pred_masks: self.pred_masks.r(), proto: self.proto.r() };
        f(preds, &SegBatch { det: self.labels.det(), masks: self.masks.r() })
    }
}

/// The fixture names of a segmentation output's gradients.
fn seg_grad_names(levels: usize) -> Vec<String> {
    let mut names = grad_names("grad.preds", levels);
    names.extend(["grad.pred_masks".to_string(), "grad.proto".to_string()]);
    names
}

/// A CUDA loss against the CPU loss on one case: value_and_grad (values and every gradient close, the prototype
/// gradient bit for bit: each element is the CPU's sum in the CPU's order), call, value_and_grad_into.
fn case_matches_cpu<C, G>(what: &str, case: &SegCase, cpu: &C, gpu: &G) -> LossOutput<f32>
where
    C: for<'a> TaskLoss<f32, Preds<'a> = SegPreds<'a, f32>, Batch<'a> = SegBatch<'a, f32>>,
    G: for<'a> TaskLoss<f32, Preds<'a> = SegPreds<'a, f32>, Batch<'a> = SegBatch<'a, f32>>,
{
    let want = case.with(|p, b| cpu.value_and_grad(p, b)).unwrap_or_else(|e| panic!("cpu {what}: {e}"));
    let out = case.with(|p, b| gpu.value_and_grad(p, b)).unwrap_or_else(|e| panic!("cuda {what}: {e}"));
    compare_outputs(&format!("cuda vs cpu {what}"), &out, &want);
    let proto = out.grads.len() - 1;
    let bits = |g: &[f32]| g.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(bits(&out.grads[proto]) == bits(&want.grads[proto]), "{what}: proto gradient not bit-equal to the CPU's");
    let plain = case.with(|p, b| gpu.call(p, b)).unwrap();
    assert!(plain.grads.is_empty());
    assert_eq!((&plain.loss, &plain.loss_items), (&out.loss, &out.loss_items), "{what}: call");
    // Buffers of any contents where the loss writes them whole, else zero-filled (TaskLoss::value_and_grad_into).
    let fill = if gpu.overwrites_grads() { 0.5 } else { 0.0 };
    let mut bufs: Vec<Vec<f32>> = out.grads.iter().map(|g| vec![fill; g.len()]).collect();
    let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
    let (loss, items) = case.with(|p, b| gpu.value_and_grad_into(p, b, &mut slices)).unwrap();
    assert_eq!((&loss, &items), (&out.loss, &out.loss_items), "{what}: value_and_grad_into");
    assert!(bufs == out.grads, "{what}: value_and_grad_into gradients ");
    out
}

/// Every v8SegmentationLoss fixture (both overlap_mask modes, mask resize, images without positives).
pub fn v8_segmentation_fixtures(mk: &SegMakers) {
    let fixtures = load_kind("v8SegmentationLoss");
    assert!(fixtures.iter().any(|f| !config(f).hyp.overlap_mask), "a fixture without overlap_mask");
    for f in fixtures {
        let case = SegCase::of(&f);
        let cpu = V8SegmentationLoss::new(case.cfg.clone()).unwrap();
        let out = case_matches_cpu(&f.name, &case, &cpu, &(mk.seg)(case.cfg.clone()).unwrap());
        check_loss_output(&format!("cuda {}", f.name), &f, &out, &seg_grad_names(case.levels.len()));
    }
}

/// Every TVPSegmentLoss fixture (with and without visual-prompt channels).
pub fn tvp_segment_fixtures(mk: &SegMakers) {
    for f in load_kind("TVPSegmentLoss") {
        let case = SegCase::of(&f);
        let cpu = TVPSegmentLoss::new(case.cfg.clone()).unwrap();
        let out = case_matches_cpu(&f.name, &case, &cpu, &(mk.tvp)(case.cfg.clone()).unwrap());
        check_loss_output(&format!("cuda {}", f.name), &f, &out, &seg_grad_names(case.levels.len()));
    }
}

/// Coefficients, prototypes `nm × mh × mw` and GT masks `gt_h × gt_w` (index maps when `overlap`, else 0/½/1 maps)
/// for a synthetic detection case.
pub fn seg_case(
    name: &str,
    s: Synthetic,
    nm: usize,
    (mh, mw): (usize, usize),
    (gt_h, gt_w): (usize, usize),
    overlap: bool,
    seed: u64,
) -> SegCase {
    let mut rng = Lcg(seed);
    let batch = s.levels[0].shape[0];
    let anchors: usize = s.levels.iter().map(|l| l.shape[2] * l.shape[3]).sum();
    let mut uniform = |n: usize, lo: f32, hi: f32| (0..n).map(|_| rng.uniform(lo, hi)).collect::<Vec<f32>>();
    let pred_masks = Owned { data: uniform(batch * nm * anchors, -1.0, 1.0), shape: vec![batch, nm, anchors] };
    let proto = Owned { data: uniform(batch * nm * mh * mw, -1.5, 1.5), shape: vec![batch, nm, mh, mw] };
    let images: Vec<usize> = s.labels.bi.data.iter().map(|&b| b as usize).collect();
    let masks = if overlap {
        let mut data = Vec::with_capacity(batch * gt_h * gt_w);
        for b in 0..batch {
            let count = images.iter().filter(|&&i| i == b).count();
            data.extend((0..gt_h * gt_w).map(|_| (rng.next_u32() as usize % (count + 1)) as f32));
        }
        Owned { data, shape: vec![batch, gt_h, gt_w] }
    } else {
        let data = (0..images.len() * gt_h * gt_w).map(|_| [0.0, 0.5, 1.0, 1.0][rng.next_u32() as usize % 4]).collect();
        Owned { data, shape: vec![images.len(), gt_h, gt_w] }
    };
    let mut cfg = s.cfg;
    cfg.hyp.overlap_mask = overlap;
    SegCase { name: name.to_string(), cfg, levels: s.levels, pred_masks, proto, labels: s.labels, masks }
}

/// Synthetic cases beyond the fixtures: more than 32 coefficients (two coefficient chunks), GT masks larger and
/// smaller than the prototypes in each mode, crops of many rows (several row tiles), a prototype grid wider than
/// high, crowded images.
pub fn synthetic_cases(mk: &SegMakers) {
    let base = SynthSpec { batch: 2, img_h: 96, img_w: 128, nc: 3, per_image: 4, ..SynthSpec::default() };
    let cases = [
        ("nm 40, overlap, upsampled masks", SynthSpec { seed: 41, ..base }, 40, (24, 32), (12, 16), true),
        ("nm 40, no overlap, downsampled", SynthSpec { seed: 42, ..base }, 40, (24, 32), (96, 128), false),
        (
            "tall crops, overlap",
            SynthSpec { seed: 43, min_side: 0.6, max_side: 0.95, ..base },
            8,
            (100, 20),
            (50, 40),
            true,
        ),
        (
            "tall crops, no overlap",
            SynthSpec { seed: 44, min_side: 0.6, max_side: 0.95, ..base },
            8,
            (100, 20),
            (100, 20),
            false,
        ),
        (
            "crowded",
            SynthSpec { seed: 45, per_image: 20, min_side: 0.05, max_side: 0.3, ..base },
            32,
            (24, 32),
            (48, 64),
            true,
        ),
    ];
    for (i, (name, spec, nm, proto, gt, overlap)) in cases.into_iter().enumerate() {
        let case = seg_case(name, synthetic(&spec), nm, proto, gt, overlap, 100 + i as u64);
        let cpu = V8SegmentationLoss::new(case.cfg.clone()).unwrap();
        case_matches_cpu(name, &case, &cpu, &(mk.seg)(case.cfg.clone()).unwrap());
    }
}

/// TVPSegmentLoss with text-prompt channels between the box and visual-prompt channels.
pub fn tvp_segment_synthetic(mk: &SegMakers) {
    let s = synthetic(&SynthSpec { nc: 3, extra_channels: 4, per_image: 4, seed: 46, ..SynthSpec::default() });
    let mut case = seg_case("tvp seg synthetic", s, 8, (24, 32), (48, 64), false, 47);
    case.cfg.nc = 4;
    let cpu = TVPSegmentLoss::new(case.cfg.clone()).unwrap();
    let out = case_matches_cpu(&case.name, &case, &cpu, &(mk.tvp)(case.cfg.clone()).unwrap());
    let n = out.grads.len();
    assert!(out.grads[n - 2..].iter().flatten().all(|&v| v == 0.0), "TVP: mask gradients are zero");
    assert!(out.loss_items[1] > 0.0, "TVP: the seg item is still computed");
}

/// Bad input: the CPU backend's error code and message, in its order (a non-finite level tensor first).
pub fn errors_match_cpu(mk: &SegMakers) {
    let spec = SynthSpec { per_image: 2, seed: 48, ..SynthSpec::default() };
    let fresh = |overlap: bool| seg_case("errors", synthetic(&spec), 8, (24, 32), (48, 64), overlap, 49);
    let check = |what: &str, case: &SegCase| {
        let cpu = V8SegmentationLoss::new(case.cfg.clone()).unwrap();
        let gpu = (mk.seg)(case.cfg.clone()).unwrap();
        let want = case.with(|p, b| cpu.value_and_grad(p, b)).expect_err("bad input must be rejected");
        let got = case.with(|p, b| gpu.value_and_grad(p, b)).expect_err("bad input must be rejected");
        assert_eq!((got.code, &got.message), (want.code, &want.message), "{what}");
        let got = case.with(|p, b| gpu.call(p, b)).expect_err("bad input must be rejected");
        assert_eq!((got.code, &got.message), (want.code, &want.message), "{what} (call)");
        got.code
    };
    let nan_level = |c: &mut SegCase| c.levels[1].data[7] = f32::NAN;
    let mut c = fresh(true);
    c.proto.shape[1] = 4;
    c.proto.data.truncate(c.proto.shape.iter().product());
    assert_eq!(check("proto nm ≠ pred_masks nm", &c), ErrorCode::ShapeMismatch);
    nan_level(&mut c);
    check("NaN level and a proto shape error", &c);
    let mut c = fresh(true);
    c.proto.data[11] = f32::INFINITY;
    check("inf in proto", &c);
    let mut c = fresh(true);
    c.pred_masks.data[3] = f32::NAN;
    check("NaN in pred_masks", &c);
    let mut c = fresh(true);
    c.masks.data[5] = 3.0; // image 0 has 2 labels
    check("overlap index past the image's labels", &c);
    nan_level(&mut c);
    check("NaN level and a mask error", &c);
    let mut c = fresh(false);
    c.masks.data[9] = 1.5;
    check("no-overlap mask value above 1", &c);
    let mut c = fresh(false);
    c.masks.shape[0] -= 1;
    c.masks.data.truncate(c.masks.shape.iter().product());
    assert_eq!(check("one mask fewer than labels", &c), ErrorCode::ShapeMismatch);
    let mut c = fresh(true);
    nan_level(&mut c);
    check("NaN level only (found on the device)", &c);
    let mut c = fresh(true);
    c.labels.cls.data[0] = 99.0;
    check("class out of range", &c);
}
