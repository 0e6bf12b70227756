//! Reads the reference fixtures (`fixtures/data/*.safetensors`, format in `fixtures/README.md`) and
//! compares numbers with the project's tolerance.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
}

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

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data")
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
        let bad = got.iter().zip(want).filter(|(g, w)| !((*g - *w).abs() <= rel * w.abs() + floor * scale + 1e-12)).count();
        panic!("{what}: {bad} of {} elements differ; worst at {i}: got {} want {} (err {err:.3e}, scale {scale:.3e})", got.len(), got[i], want[i]);
    }
}

pub fn to_f64<F: Copy + Into<f64>>(v: &[F]) -> Vec<f64> {
    v.iter().map(|&x| x.into()).collect()
}

/// Runs a dense assigner (`TaskAlignedAssigner` or its rotated variant) on every fixture of `kind`
/// and checks the five outputs: masks and indices exactly, boxes and scores within tolerance.
pub fn check_assigner_kind(
    kind: &str,
    run: impl Fn(&yolo_loss_core::assigner::AssignerConfig, [yolo_loss_core::TensorRef<f32>; 6]) -> yolo_loss_core::Result<yolo_loss_core::blocks::DenseAssignment<f32>>,
) {
    for f in load_kind(kind) {
        let c = &f.config;
        let cfg = yolo_loss_core::assigner::AssignerConfig {
            topk: c["topk"].as_u64().unwrap() as usize,
            num_classes: c["num_classes"].as_u64().unwrap() as usize,
            alpha: c["alpha"].as_f64().unwrap(),
            beta: c["beta"].as_f64().unwrap(),
            eps: c["eps"].as_f64().unwrap(),
        };
        let names = ["in.pd_scores", "in.pd_bboxes", "in.anc_points", "in.gt_labels", "in.gt_bboxes", "in.mask_gt"];
        let data: Vec<Vec<f32>> = names.iter().map(|n| f.get(n).f32()).collect();
        let inputs = std::array::from_fn(|i| yolo_loss_core::TensorRef::new(&data[i], &f.get(names[i]).shape));
        let out = run(&cfg, inputs).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let fg: Vec<f64> = out.fg_mask.iter().map(|&b| b as u8 as f64).collect();
        assert_eq!(fg, f.get("out.fg_mask").data, "{}: fg_mask", f.name);
        let idx: Vec<f64> = out.target_gt_idx.iter().map(|&v| v as f64).collect();
        assert_eq!(idx, f.get("out.target_gt_idx").data, "{}: target_gt_idx", f.name);
        let labels: Vec<f64> = out.target_labels.iter().map(|&v| v as f64).collect();
        assert_eq!(labels, f.get("out.target_labels").data, "{}: target_labels", f.name);
        assert_close(&format!("{} target_bboxes", f.name), &to_f64(&out.target_bboxes), f.get("out.target_bboxes"));
        assert_close(&format!("{} target_scores", f.name), &to_f64(&out.target_scores), f.get("out.target_scores"));
    }
}
