//! Test support shared by the tests of `yolo-loss-core` and `yolo-loss-cuda` (a dev-dependency of both, never
//! published): the reader of the reference fixtures (`fixtures/data/*.safetensors`, format in
//! `fixtures/README.md`), the project's tolerance against them, fixture tensors as core types ([`views`]), and a
//! small deterministic random stream.
//!
//! Only integration tests (and the CUDA crate's unit tests) use it: the core's own unit tests are built as another
//! copy of the core, whose types are not the ones of [`views`].

pub mod views;

pub use views::{check_loss_output, config, grad_names, levels, refs, Labels, Owned};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// One tensor of a fixture, widened to f64 whatever its stored dtype.
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
}

/// One fixture file: its name (file stem), `kind` and `config` (from the safetensors metadata) and its tensors.
pub struct Fixture {
    pub name: String,
    pub kind: String,
    pub config: serde_json::Value,
    pub tensors: BTreeMap<String, Tensor>,
}

impl Fixture {
    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("{}: missing tensor {name}", self.name))
    }
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    pub fn cfg_f64(&self, key: &str) -> f64 {
        self.config[key].as_f64().unwrap_or_else(|| panic!("{}: config.{key} missing", self.name))
    }
    pub fn cfg_bool(&self, key: &str) -> bool {
        self.config[key].as_bool().unwrap_or(false)
    }
}

/// `$YOLO_LOSS_FIXTURES_DIR` when set (prepared test binaries run from another checkout, scripts/gpu-check.sh),
/// else the repository's fixtures/data.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("YOLO_LOSS_FIXTURES_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data"),
    }
}

/// Every fixture of `kind`, sorted by name. Panics when there is none: a test over no data cannot fail.
pub fn load_kind(kind: &str) -> Vec<Fixture> {
    let mut out: Vec<Fixture> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/data exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| load(&p))
        .filter(|f| f.kind == kind)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no fixture of kind {kind} in {}", fixtures_dir().display());
    out
}

/// Reads one fixture file.
pub fn load(path: &Path) -> Fixture {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f64> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::I32 => raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::I64 => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::U8 | Dtype::BOOL => raw.iter().map(|&b| b as f64).collect(),
            d => panic!("{}: unsupported dtype {d:?} for {name}", path.display()),
        };
        tensors.insert(name.to_string(), Tensor { shape: view.shape().to_vec(), data });
    }
    Fixture {
        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
        kind: md.get("kind").cloned().unwrap_or_default(),
        config: md.get("config").map(|c| serde_json::from_str(c).unwrap()).unwrap_or(serde_json::Value::Null),
        tensors,
    }
}

/// Relative 1e-4 per element, with an absolute floor of 1e-5 of the reference tensor's largest
/// magnitude: elements that cancel to ~0 in fp32 (a DFL gradient made of terms 1e4 times larger)
/// carry the reference's own rounding error, so they are compared on the tensor's scale.
pub fn assert_close(what: &str, got: &[f64], want: &Tensor) {
    assert_close_tol(what, got, &want.data, 1e-4, 1e-5);
}

/// |got − want| ≤ rel·|want| + floor·max|want| + 1e-12 for every element (NaN fails); the panic names the worst
/// element and how many differ.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub fn assert_close_tol(what: &str, got: &[f64], want: &[f64], rel: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs reference {}", got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = rel * w.abs() + floor * scale + 1e-12;
        let err = (g - w).abs();
        if !(err <= tol) && worst.is_none_or(|(_, e)| err > e) {
            worst = Some((i, err));
        }
    }
    if let Some((i, err)) = worst {
        let bad =
            got.iter().zip(want).filter(|(g, w)| !((*g - *w).abs() <= rel * w.abs() + floor * scale + 1e-12)).count();
        panic!(
            "{what}: {bad} of {} elements differ; worst at {i}: got {} want {} (err {err:.3e}, scale {scale:.3e})",
            got.len(),
            got[i],
            want[i]
        );
    }
}

pub fn to_f64<F: Copy + Into<f64>>(v: &[F]) -> Vec<f64> {
    v.iter().map(|&x| x.into()).collect()
}

/// A deterministic random stream (no dependency; the same numbers on every machine).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() as f32 / (1u64 << 31) as f32)
    }
}
