//! The benchmark's cases, one row per case in [`CASES`] (the CPU benchmark's shapes, bench/cases.ts, so that the two
//! tables compare; bench/cases.ts has no classification, E2E or TVP case, so those rows are ours), the seeded inputs
//! of a case ([`inputs`]), their folder for bench/gpu_reference.py ([`write_case`]: bench/data.ts's format), and the
//! one place that knows each task's types ([`with_loss`]: the CPU and CUDA loss, the configuration, the views).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::e2e::{E2EDetectLoss, E2EPreds};
use yolo_loss_core::obb::ObbPreds;
use yolo_loss_core::pose::{PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
use yolo_loss_core::prompts::{TVPDetectLoss, TVPSegmentLoss};
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, TensorRef, V8DetectionLoss, V8OBBLoss};
use yolo_loss_cuda::{
    CpuLoss, CudaClassificationLoss, CudaDetectionLoss, CudaE2EDetectLoss, CudaLoss, CudaObbLoss, CudaPoseLoss,
    CudaSegmentationLoss, CudaTVPDetectLoss, CudaTVPSegmentLoss,
};
use yolo_loss_testkit::Lcg;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Detect,
    Segment,
    Pose,
    Obb,
    Classify,
    E2E,
    TvpDetect,
    TvpSegment,
}

impl Task {
    /// The name bench/ref_tasks.py knows the task by (bench/cases.ts's for the tasks it has).
    pub fn name(self) -> &'static str {
        match self {
            Task::Detect => "detect",
            Task::Segment => "segment",
            Task::Pose => "pose",
            Task::Obb => "obb",
            Task::Classify => "classify",
            Task::E2E => "e2e",
            Task::TvpDetect => "tvp_detect",
            Task::TvpSegment => "tvp_segment",
        }
    }
}

/// One case: a task at one shape. Strides 8/16/32 and reg_max 16 throughout.
#[derive(Debug, Clone)]
pub struct CaseDef {
    pub id: &'static str,
    pub task: Task,
    pub batch: usize,
    /// Image height and width (pixels).
    pub size: usize,
    /// Classes of the head (TVP: the text prompts, `vnc` visual-prompt classes come on top).
    pub nc: usize,
    pub labels_per_image: usize,
    /// Segmentation: mask coefficients; prototypes are size/4 × size/4.
    pub nm: usize,
    /// Pose: (K, D).
    pub kpt_shape: (usize, usize),
    /// TVP: visual-prompt classes (the labels index them).
    pub vnc: usize,
    pub seed: u64,
}

const DET: CaseDef = CaseDef {
    id: "",
    task: Task::Detect,
    batch: 16,
    size: 640,
    nc: 80,
    labels_per_image: 8,
    nm: 0,
    kpt_shape: (0, 0),
    vnc: 0,
    seed: 0,
};
const REG_MAX: usize = 16;
const STRIDES: [f64; 3] = [8.0, 16.0, 32.0];

/// Every case, in table order. The detection seeds are the earlier benchmark's (0x5eed_0000 + labels per image), so
/// det8 and det1000 see the same inputs as before.
pub const CASES: [CaseDef; 9] = [
    CaseDef { id: "det8", seed: 0x5eed_0008, ..DET },
    CaseDef { id: "det1000", labels_per_image: 1000, seed: 0x5eed_03e8, ..DET },
    CaseDef { id: "seg", task: Task::Segment, nm: 32, seed: 0x5eed_1001, ..DET },
    CaseDef { id: "pose", task: Task::Pose, nc: 1, kpt_shape: (17, 3), seed: 0x5eed_1002, ..DET },
    CaseDef { id: "obb", task: Task::Obb, size: 1024, nc: 15, seed: 0x5eed_1003, ..DET },
    // ImageNet-1k logits at the default batch.
    CaseDef { id: "cls", task: Task::Classify, nc: 1000, labels_per_image: 1, seed: 0x5eed_1004, ..DET },
    CaseDef { id: "e2e", task: Task::E2E, seed: 0x5eed_1005, ..DET },
    // YOLOE: 80 text prompts, 80 visual-prompt classes.
    CaseDef { id: "tvp_det", task: Task::TvpDetect, vnc: 80, seed: 0x5eed_1006, ..DET },
    CaseDef { id: "tvp_seg", task: Task::TvpSegment, vnc: 80, nm: 32, seed: 0x5eed_1007, ..DET },
];

impl CaseDef {
    /// "B=16 640x640 nc=80 8 lab/img" (bench/cases.ts's shapeOf).
    pub fn shape(&self) -> String {
        if self.task == Task::Classify {
            return format!("B={} nc={}", self.batch, self.nc);
        }
        let (b, size, nc, labels) = (self.batch, self.size, self.nc, self.labels_per_image);
        let mut s = format!("B={b} {size}x{size} nc={nc} {labels} lab/img");
        if self.nm > 0 {
            s += &format!(" nm={} proto {p}x{p}", self.nm, p = size / 4);
        }
        if self.kpt_shape.0 > 0 {
            s += &format!(" kpt {}x{}", self.kpt_shape.0, self.kpt_shape.1);
        }
        if self.vnc > 0 {
            s += &format!(" vnc={}", self.vnc);
        }
        s
    }

    pub fn config(&self) -> DetectionConfig {
        DetectionConfig { nc: self.nc, reg_max: REG_MAX, strides: STRIDES.to_vec(), hyp: Hyp::default(), tal_topk: 10 }
    }

    /// The case as bench/data.ts's manifest describes one (plus what the CPU benchmark's cases do not have).
    fn manifest_case(&self) -> Value {
        let h = Hyp::default();
        json!({
            "id": self.id, "task": self.task.name(), "B": self.batch, "imgH": self.size, "imgW": self.size,
            "nc": self.nc, "reg_max": REG_MAX, "strides": STRIDES, "labelsPerImage": self.labels_per_image,
            "nm": self.nm, "kpt_shape": [self.kpt_shape.0, self.kpt_shape.1], "vnc": self.vnc, "tal_topk": 10,
            "hyp": {"box": h.box_gain, "cls": h.cls, "dfl": h.dfl, "pose": h.pose, "kobj": h.kobj,
                    "overlap_mask": h.overlap_mask},
        })
    }
}

/// A case's inputs, by bench/data.ts's names: `preds.<level>`, `preds.pred_masks`, `batch.bboxes`, ... (E2E:
/// `preds.one2many.<level>`, `preds.one2one.<level>`; classification: `preds.logits`, `batch.cls`).
pub struct Tensors(BTreeMap<String, (Vec<f32>, Vec<usize>)>);

impl Tensors {
    fn put(&mut self, name: &str, data: Vec<f32>, shape: Vec<usize>) {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}");
        self.0.insert(name.to_string(), (data, shape));
    }

    fn get(&self, name: &str) -> TensorRef<'_, f32> {
        let (d, s) = self.0.get(name).unwrap_or_else(|| panic!("no tensor {name}"));
        TensorRef::new(d, s)
    }

    pub fn levels(&self, prefix: &str) -> Vec<TensorRef<'_, f32>> {
        (0..STRIDES.len()).map(|l| self.get(&format!("{prefix}.{l}"))).collect()
    }

    pub fn labels(&self) -> DetBatch<'_, f32> {
        DetBatch {
            batch_idx: self.get("batch.batch_idx"),
            cls: self.get("batch.cls"),
            bboxes: self.get("batch.bboxes"),
        }
    }
}

fn normal(rng: &mut Lcg, mean: f32, std: f32) -> f32 {
    let u = 1.0 - rng.uniform(0.0, 1.0);
    let v = rng.uniform(0.0, 1.0);
    mean + std * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// The seeded inputs of a case. Head outputs: box logits in [−2, 2], class logits in [−8, 2] (mostly background,
/// as in training); labels of random classes, boxes of side 5–60 % of the image (1–8 % at ≥ 100 labels per image).
/// Segmentation: coefficients ~ N(0, (2/√nm)²), prototypes ~ N(0, 1), overlap index maps with one ellipse per label
/// (larger ones painted first); pose: keypoints inside their box, visibility 2/1/0 (70/10/20 %), outputs ~ N(0, ½²)
/// (visibility logits N(0, 2²)); OBB: angles uniform in (0, π/2], predicted (σ(z) − ¼)·π; classification: logits
/// ~ N(0, 2²). (bench/data.ts's choices, drawn from this crate's generator.)
pub fn inputs(c: &CaseDef) -> Tensors {
    let mut t = Tensors(BTreeMap::new());
    let mut rng = Lcg(c.seed);
    let b = c.batch;
    if c.task == Task::Classify {
        let logits = (0..b * c.nc).map(|_| normal(&mut rng, 0.0, 2.0)).collect();
        t.put("preds.logits", logits, vec![b, c.nc]);
        let cls = (0..b).map(|_| (rng.next_u32() as usize % c.nc) as f32).collect();
        t.put("batch.cls", cls, vec![b]);
        return t;
    }
    let channels = 4 * REG_MAX + c.nc + c.vnc;
    let heads: &[&str] = if c.task == Task::E2E { &["preds.one2many", "preds.one2one"] } else { &["preds"] };
    let sides: Vec<usize> = STRIDES.iter().map(|s| (c.size as f64 / s).ceil() as usize).collect();
    let anchors: usize = sides.iter().map(|n| n * n).sum();
    for head in heads {
        for (l, &n) in sides.iter().enumerate() {
            let hw = n * n;
            let mut data = vec![0f32; b * channels * hw];
            for (i, v) in data.iter_mut().enumerate() {
                let ch = (i / hw) % channels;
                *v = if ch < 4 * REG_MAX { rng.uniform(-2.0, 2.0) } else { rng.uniform(-8.0, 2.0) };
            }
            t.put(&format!("{head}.{l}"), data, vec![b, channels, n, n]);
        }
    }
    let label_classes = if c.vnc > 0 { c.vnc } else { c.nc };
    let (lo, hi) = if c.labels_per_image >= 100 { (0.01, 0.08) } else { (0.05, 0.6) };
    let cols = if c.task == Task::Obb { 5 } else { 4 };
    let (mut batch_idx, mut cls, mut bboxes) = (vec![], vec![], vec![]);
    for img in 0..b {
        for _ in 0..c.labels_per_image {
            let (w, h) = (rng.uniform(lo, hi), rng.uniform(lo, hi));
            batch_idx.push(img as f32);
            cls.push((rng.next_u32() as usize % label_classes) as f32);
            bboxes.extend_from_slice(&[rng.uniform(w / 2.0, 1.0 - w / 2.0), rng.uniform(h / 2.0, 1.0 - h / 2.0), w, h]);
            if cols == 5 {
                bboxes.push(rng.uniform(1e-3, 1.0) * std::f32::consts::FRAC_PI_2);
            }
        }
    }
    let n = batch_idx.len();
    if matches!(c.task, Task::Segment | Task::TvpSegment) {
        let m = c.size / 4;
        let std = 2.0 / (c.nm as f32).sqrt();
        t.put(
            "preds.pred_masks",
            (0..b * c.nm * anchors).map(|_| normal(&mut rng, 0.0, std)).collect(),
            vec![b, c.nm, anchors],
        );
        t.put("preds.proto", (0..b * c.nm * m * m).map(|_| normal(&mut rng, 0.0, 1.0)).collect(), vec![b, c.nm, m, m]);
        t.put("batch.masks", overlap_masks(&bboxes, b, c.labels_per_image, m), vec![b, m, m]);
    }
    if c.task == Task::Pose {
        let (k, d) = c.kpt_shape;
        let mut kp = vec![0f32; n * k * d];
        for (i, row) in kp.chunks_mut(k * d).enumerate() {
            let bx = &bboxes[4 * i..4 * i + 4];
            for p in row.chunks_mut(d) {
                let x = bx[0] + rng.uniform(-0.5, 0.5) * bx[2];
                let y = bx[1] + rng.uniform(-0.5, 0.5) * bx[3];
                let u = rng.uniform(0.0, 1.0);
                let v = if u < 0.7 {
                    2.0
                } else if u < 0.8 {
                    1.0
                } else {
                    0.0
                };
                let zero = v == 0.0 && rng.uniform(0.0, 1.0) < 0.5;
                p[0] = if zero { 0.0 } else { x };
                p[1] = if zero { 0.0 } else { y };
                if d == 3 {
                    p[2] = v;
                }
            }
        }
        t.put("batch.keypoints", kp, vec![n, k, d]);
        let mut kpts = vec![0f32; b * k * d * anchors];
        for (row, plane) in kpts.chunks_mut(anchors).enumerate() {
            let std = if d == 3 && row % d == 2 { 2.0 } else { 0.5 };
            plane.iter_mut().for_each(|v| *v = normal(&mut rng, 0.0, std));
        }
        t.put("preds.kpts", kpts, vec![b, k * d, anchors]);
    }
    if c.task == Task::Obb {
        let angle =
            (0..b * anchors).map(|_| (1.0 / (1.0 + (-normal(&mut rng, 0.0, 1.0)).exp()) - 0.25) * std::f32::consts::PI);
        t.put("preds.angle", angle.collect(), vec![b, 1, anchors]);
    }
    t.put("batch.batch_idx", batch_idx, vec![n]);
    t.put("batch.cls", cls, vec![n, 1]);
    t.put("batch.bboxes", bboxes, vec![n, cols]);
    t
}

/// `overlap_mask` index maps `[B, m, m]`: label j of an image is j + 1 inside its ellipse; the image's labels are
/// painted largest first, so that smaller objects win where they overlap (the dataloader's order).
fn overlap_masks(bboxes: &[f32], b: usize, per_image: usize, m: usize) -> Vec<f32> {
    let mut masks = vec![0f32; b * m * m];
    for img in 0..b {
        let boxes = &bboxes[4 * img * per_image..4 * (img + 1) * per_image];
        let mut order: Vec<usize> = (0..per_image).collect();
        order.sort_by(|&p, &q| (boxes[4 * q + 2] * boxes[4 * q + 3]).total_cmp(&(boxes[4 * p + 2] * boxes[4 * p + 3])));
        for j in order {
            let [cx, cy, w, h] = [0, 1, 2, 3].map(|k| boxes[4 * j + k] * m as f32);
            let (rx, ry) = ((w / 2.0).max(0.5), (h / 2.0).max(0.5));
            for y in 0..m {
                for x in 0..m {
                    let (dx, dy) = ((x as f32 + 0.5 - cx) / rx, (y as f32 + 0.5 - cy) / ry);
                    if dx * dx + dy * dy <= 1.0 {
                        masks[(img * m + y) * m + x] = (j + 1) as f32;
                    }
                }
            }
        }
    }
    masks
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The case's inputs under `dir` as bench/data.ts writes them: `NAME.f32` (raw little-endian f32) per tensor and
/// manifest.json `{"case": {...}, "tensors": {NAME: {"file", "shape"}}}`, for bench/gpu_reference.py.
pub fn write_case(dir: &Path, c: &CaseDef, t: &Tensors) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let mut tensors = serde_json::Map::new();
    for (name, (data, shape)) in &t.0 {
        let file = format!("{name}.f32");
        write_f32(&dir.join(&file), data);
        tensors.insert(name.clone(), json!({"file": file, "shape": shape}));
    }
    let manifest = json!({"case": c.manifest_case(), "tensors": tensors});
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

/// What runs on a case, for any task: given the task's CPU loss type `C`, its CUDA type `G`, the configuration and
/// the inputs as the losses take them.
pub trait Visit {
    type Out;
    fn visit<C: CpuLoss, G: CudaLoss<C>>(
        &mut self,
        cfg: C::Config,
        preds: C::Preds<'_>,
        batch: &C::Batch<'_>,
    ) -> Self::Out;
}

/// Calls `v` with the case's task types and inputs: the one place per task of this benchmark.
pub fn with_loss<V: Visit>(c: &CaseDef, t: &Tensors, v: &mut V) -> V::Out {
    let cfg = c.config();
    let feats = || t.levels("preds");
    let seg_batch = || SegBatch { det: t.labels(), masks: t.get("batch.masks") };
    let seg_preds = |feats| SegPreds { feats, pred_masks: t.get("preds.pred_masks"), proto: t.get("preds.proto") };
    match c.task {
        Task::Detect => v.visit::<V8DetectionLoss, CudaDetectionLoss>(cfg, &feats(), &t.labels()),
        Task::E2E => {
            let (one2many, one2one) = (t.levels("preds.one2many"), t.levels("preds.one2one"));
            let preds = E2EPreds { one2many: &one2many, one2one: &one2one };
            v.visit::<E2EDetectLoss, CudaE2EDetectLoss>(cfg, preds, &t.labels())
        }
        Task::TvpDetect => v.visit::<TVPDetectLoss, CudaTVPDetectLoss>(cfg, &feats(), &t.labels()),
        Task::Segment => v.visit::<V8SegmentationLoss, CudaSegmentationLoss>(cfg, seg_preds(&feats()), &seg_batch()),
        Task::TvpSegment => v.visit::<TVPSegmentLoss, CudaTVPSegmentLoss>(cfg, seg_preds(&feats()), &seg_batch()),
        Task::Pose => {
            let pose = PoseConfig { det: cfg, kpt_shape: c.kpt_shape, oks_sigmas: None };
            let preds = PosePreds { feats: &feats(), kpts: t.get("preds.kpts") };
            v.visit::<V8PoseLoss, CudaPoseLoss>(
                pose,
                preds,
                &PoseBatch { det: t.labels(), keypoints: t.get("batch.keypoints") },
            )
        }
        Task::Obb => {
            let preds = ObbPreds { feats: &feats(), angle: t.get("preds.angle") };
            v.visit::<V8OBBLoss, CudaObbLoss>(cfg, preds, &t.labels())
        }
        Task::Classify => {
            v.visit::<V8ClassificationLoss, CudaClassificationLoss>((), t.get("preds.logits"), &t.get("batch.cls"))
        }
    }
}
