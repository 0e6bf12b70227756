//! The label part of the batch dict: validation and `preprocess` (docs/spec.md §3, §9).

use crate::error::{LossError, Result};
use crate::geometry::xywh2xyxy;
use crate::real::Real;
use crate::tensor::TensorRef;

/// Validated labels, one entry per label row, in batch order. `W` values per box: normalized
/// (cx, cy, w, h), and θ in radians for oriented boxes (`W = 5`).
#[derive(Debug, Clone)]
pub struct Labels<F, const W: usize = 4> {
    pub image: Vec<usize>,
    /// Class id as given (float); the assigner truncates it.
    pub cls: Vec<F>,
    pub boxes: Vec<[F; W]>,
}

impl<F: Real, const W: usize> Labels<F, W> {
    pub fn len(&self) -> usize {
        self.image.len()
    }
    pub fn is_empty(&self) -> bool {
        self.image.is_empty()
    }
}

/// What the `W` values of a box are, for messages.
fn box_layout(w: usize) -> &'static str {
    if w == 5 {
        "cx, cy, w, h, angle"
    } else {
        "cx, cy, w, h"
    }
}

/// Checks `batch_idx [N]`, `cls [N,1]`, `bboxes [N,W]` against the batch size and class count: image
/// indices are integers in [0, B), class ids in [0, nc), widths and heights not negative, all finite.
pub fn validate_labels<F: Real, const W: usize>(
    batch_idx: TensorRef<F>,
    cls: TensorRef<F>,
    bboxes: TensorRef<F>,
    batch_size: usize,
    nc: usize,
) -> Result<Labels<F, W>> {
    batch_idx.check_len("batch.batch_idx")?;
    cls.check_len("batch.cls")?;
    bboxes.check_len("batch.bboxes")?;
    let n = batch_idx.data.len();
    let vector_like = |t: &TensorRef<F>| t.shape.len() == 1 || (t.shape.len() == 2 && t.shape[1] == 1);
    if !vector_like(&batch_idx) {
        return Err(LossError::shape(format!(
            "batch.batch_idx: expected shape [N] or [N, 1], got {}",
            crate::tensor::fmt_shape(batch_idx.shape)
        )));
    }
    if !vector_like(&cls) || cls.data.len() != n {
        return Err(LossError::shape(format!(
            "batch.cls: expected shape [{n}, 1] (one class per label of batch.batch_idx), got {}",
            crate::tensor::fmt_shape(cls.shape)
        )));
    }
    if bboxes.shape.len() != 2 || bboxes.shape[0] != n || bboxes.shape[1] != W {
        return Err(LossError::shape(format!(
            "batch.bboxes: expected shape [{n}, {W}] ({} per label of batch.batch_idx), got {}",
            box_layout(W),
            crate::tensor::fmt_shape(bboxes.shape)
        )));
    }
    batch_idx.check_finite("batch.batch_idx")?;
    cls.check_finite("batch.cls")?;
    bboxes.check_finite("batch.bboxes")?;
    let mut labels = Labels { image: Vec::with_capacity(n), cls: Vec::with_capacity(n), boxes: Vec::with_capacity(n) };
    for i in 0..n {
        let bi = batch_idx.data[i].f64();
        if bi < 0.0 || bi >= batch_size as f64 || bi.fract() != 0.0 {
            return Err(LossError::label(format!(
                "batch.batch_idx[{i}]: expected an integer image index in [0, {batch_size}), got {bi}"
            )));
        }
        let c = cls.data[i].f64();
        if c < 0.0 || c.trunc() >= nc as f64 {
            return Err(LossError::label(format!("batch.cls[{i}]: expected a class id in [0, {nc}), got {c}")));
        }
        let b: [F; W] = std::array::from_fn(|k| bboxes.data[W * i + k]);
        if b[2] < F::zero() || b[3] < F::zero() {
            return Err(LossError::label(format!(
                "batch.bboxes[{i}]: expected a non-negative width and height, got w = {}, h = {}",
                b[2], b[3]
            )));
        }
        labels.image.push(bi as usize);
        labels.cls.push(cls.data[i]);
        labels.boxes.push(b);
    }
    Ok(labels)
}

/// The padded (B, M, ·) table `preprocess` builds: image i's labels in batch order, zero rows after.
#[derive(Debug, Clone)]
pub struct GtTable<F, const W: usize = 4> {
    pub batch_size: usize,
    /// Largest label count of any image (0 when there are no labels).
    pub max_labels: usize,
    /// Per slot: class id and pixel box (xyxy; xywhr for oriented boxes), zeros for padding.
    pub cls: Vec<F>,
    pub boxes: Vec<[F; W]>,
    /// Per slot: the reference's validity test, sum of the box values > 0 (θ included).
    pub valid: Vec<bool>,
}

impl<F: Real> GtTable<F, 4> {
    /// Scales normalized (cx, cy, w, h) by `scale = (W, H, W, H)` and converts to xyxy.
    pub fn build(labels: &Labels<F, 4>, batch_size: usize, scale: [F; 4]) -> Self {
        Self::build_with(labels, batch_size, |b| {
            xywh2xyxy([b[0] * scale[0], b[1] * scale[1], b[2] * scale[2], b[3] * scale[3]])
        })
    }
}

impl<F: Real> GtTable<F, 5> {
    /// Scales normalized (cx, cy, w, h) by `scale = (W, H, W, H)`; θ is kept.
    pub fn build_rotated(labels: &Labels<F, 5>, batch_size: usize, scale: [F; 4]) -> Self {
        Self::build_with(labels, batch_size, |b| {
            [b[0] * scale[0], b[1] * scale[1], b[2] * scale[2], b[3] * scale[3], b[4]]
        })
    }
}

impl<F: Real, const W: usize> GtTable<F, W> {
    /// Pads each image's labels to the largest count, converting every box with `to_pixels`.
    pub fn build_with(labels: &Labels<F, W>, batch_size: usize, to_pixels: impl Fn([F; W]) -> [F; W]) -> Self {
        let mut counts = vec![0usize; batch_size];
        for &i in &labels.image {
            counts[i] += 1;
        }
        let m = counts.iter().copied().max().unwrap_or(0);
        let mut t = GtTable {
            batch_size,
            max_labels: m,
            cls: vec![F::zero(); batch_size * m],
            boxes: vec![[F::zero(); W]; batch_size * m],
            valid: vec![false; batch_size * m],
        };
        let mut fill = vec![0usize; batch_size];
        for (k, &i) in labels.image.iter().enumerate() {
            let slot = i * m + fill[i];
            fill[i] += 1;
            let px = to_pixels(labels.boxes[k]);
            t.cls[slot] = labels.cls[k];
            t.boxes[slot] = px;
            t.valid[slot] = px.iter().fold(F::zero(), |acc, &v| acc + v) > F::zero();
        }
        t
    }

    /// Normalized boxes so large that they overflow float32 once scaled to pixels are rejected here
    /// (the reference would carry ±inf into NaN losses).
    pub fn check_finite(&self) -> Result<()> {
        match self.boxes.iter().position(|b| b.iter().any(|v| !v.is_finite())) {
            None => Ok(()),
            Some(slot) => Err(LossError::non_finite(format!(
                "batch.bboxes: expected boxes that stay finite in pixels, got {:?} for label {} of image {}",
                self.boxes[slot],
                slot % self.max_labels.max(1),
                slot / self.max_labels.max(1)
            ))),
        }
    }

    /// `[B, M, 1 + W]` rows (cls, box…), the reference's `preprocess` output.
    pub fn to_rows(&self) -> Vec<F> {
        let mut out = Vec::with_capacity(self.cls.len() * (W + 1));
        for (c, b) in self.cls.iter().zip(&self.boxes) {
            out.push(*c);
            out.extend_from_slice(b);
        }
        out
    }

    /// The assigner's view of image `b`'s slots.
    pub fn gt_boxes(&self, b: usize) -> Vec<crate::assigner::GtBox<[F; W]>> {
        let m = self.max_labels;
        (b * m..(b + 1) * m)
            .map(|i| crate::assigner::GtBox {
                label: self.cls[i].to_usize().unwrap_or(0),
                bbox: self.boxes[i],
                valid: self.valid[i],
            })
            .collect()
    }
}

/// `preprocess` of both label widths: `targets` rows are (batch_idx, cls, box…) with `W` box values.
pub(crate) fn preprocess_rows<F: Real, const W: usize>(
    targets: TensorRef<F>,
    batch_size: usize,
    scale: [F; 4],
    build: impl Fn(&Labels<F, W>) -> GtTable<F, W>,
) -> Result<(Vec<F>, Vec<usize>)> {
    let layout = format!("[N, {}] of (batch_idx, cls, {})", W + 2, box_layout(W));
    targets.check_rank("targets", 2, &layout)?;
    if targets.shape[1] != W + 2 {
        return Err(LossError::shape(format!(
            "targets: expected shape {layout}, got {}",
            crate::tensor::fmt_shape(targets.shape)
        )));
    }
    if scale.iter().any(|s| !s.is_finite()) {
        return Err(LossError::non_finite(format!(
            "scale_tensor: expected 4 finite values (W, H, W, H), got {:?}",
            scale
        )));
    }
    let n = targets.shape[0];
    let col = |j: usize| -> Vec<F> { (0..n).map(|i| targets.data[(W + 2) * i + j]).collect() };
    let (bi, cls) = (col(0), col(1));
    let boxes: Vec<F> = (0..n).flat_map(|i| targets.data[(W + 2) * i + 2..(W + 2) * (i + 1)].to_vec()).collect();
    let (s1, s2) = ([n], [n, W]);
    let labels = validate_labels::<F, W>(
        TensorRef::new(&bi, &s1),
        TensorRef::new(&cls, &s1),
        TensorRef::new(&boxes, &s2),
        batch_size,
        usize::MAX,
    )?;
    let table = build(&labels);
    Ok((table.to_rows(), vec![batch_size, table.max_labels, W + 1]))
}

/// `preprocess(targets [N,6], batch_size, scale)` of the reference: targets rows are
/// (batch_idx, cls, cx, cy, w, h). Returns `[B, M, 5]` data and its shape.
pub fn preprocess<F: Real>(targets: TensorRef<F>, batch_size: usize, scale: [F; 4]) -> Result<(Vec<F>, Vec<usize>)> {
    preprocess_rows::<F, 4>(targets, batch_size, scale, |l| GtTable::<F, 4>::build(l, batch_size, scale))
}
