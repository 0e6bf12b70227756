//! The shape key of a call: what decides how long it takes on either backend, so that 'auto' times each kind of
//! call once and remembers the faster backend for it.
//!
//! It holds the shape of every prediction tensor (batch size, channels, grid sizes: the bulk of the work on both
//! backends) and the number of labels as its power-of-two bucket (0, 1, 2–3, 4–7, ...): the assigner's work grows
//! with it, but it changes with every batch of a training run, and a key per exact count would probe forever. For
//! the segmentation losses the mask size (`masks`' trailing dimensions) too. Label contents (boxes, classes) are not
//! in it: they change the cost far less than the shapes do.
//!
//! The key is a 64-bit FNV-1a hash of those numbers: computing it allocates nothing and takes a few dozen multiply-
//! xors, against a loss call of tens of microseconds at the least. Two different shapes with the same hash would share
//! one decision: a possible slowdown, never a different result (both backends compute the same loss).

use yolo_loss_core::detection::DetBatch;
use yolo_loss_core::e2e::E2EPreds;
use yolo_loss_core::obb::ObbPreds;
use yolo_loss_core::pose::{PoseBatch, PosePreds};
use yolo_loss_core::segmentation::{SegBatch, SegPreds};
use yolo_loss_core::TensorRef;

/// The shape key of one call (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeKey(pub(super) u64);

impl ShapeKey {
    /// The key of a call with these predictions and this batch.
    pub fn of(preds: &impl Shapes, batch: &impl Shapes) -> Self {
        let mut h = KeyHasher(0xcbf2_9ce4_8422_2325);
        preds.feed(&mut h);
        // A separator, so that a prediction shape cannot run on into the batch's numbers.
        h.word(u64::MAX);
        batch.feed(&mut h);
        ShapeKey(h.0)
    }
}

/// FNV-1a over 64-bit words.
pub struct KeyHasher(u64);

impl KeyHasher {
    fn word(&mut self, w: u64) {
        for byte in w.to_le_bytes() {
            self.0 = (self.0 ^ byte as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// A shape, rank first (so that `[2, 3]` then `[4]` differs from `[2]` then `[3, 4]`).
    fn shape(&mut self, dims: &[usize]) {
        self.word(dims.len() as u64);
        dims.iter().for_each(|&d| self.word(d as u64));
    }

    /// A label count, as its power-of-two bucket: 0 for none, then ⌊log2 n⌋ + 1.
    fn label_count(&mut self, n: usize) {
        self.word(u64::from(usize::BITS - n.leading_zeros()));
    }
}

/// What a task's predictions or batch contribute to the shape key.
pub trait Shapes {
    fn feed(&self, h: &mut KeyHasher);
}

/// One tensor (classification's logits and its `cls [B]`, a lone prediction tensor): its shape.
impl Shapes for TensorRef<'_, f32> {
    fn feed(&self, h: &mut KeyHasher) {
        h.shape(self.shape);
    }
}

/// A list of level tensors: how many, then each shape.
impl Shapes for &[TensorRef<'_, f32>] {
    fn feed(&self, h: &mut KeyHasher) {
        h.word(self.len() as u64);
        self.iter().for_each(|t| t.feed(h));
    }
}

impl Shapes for E2EPreds<'_, f32> {
    fn feed(&self, h: &mut KeyHasher) {
        self.one2many.feed(h);
        self.one2one.feed(h);
    }
}

impl Shapes for SegPreds<'_, f32> {
    fn feed(&self, h: &mut KeyHasher) {
        self.feats.feed(h);
        self.pred_masks.feed(h);
        self.proto.feed(h);
    }
}

impl Shapes for PosePreds<'_, f32> {
    fn feed(&self, h: &mut KeyHasher) {
        self.feats.feed(h);
        self.kpts.feed(h);
    }
}

impl Shapes for ObbPreds<'_, f32> {
    fn feed(&self, h: &mut KeyHasher) {
        self.feats.feed(h);
        self.angle.feed(h);
    }
}

/// The detection labels (OBB's too): the bucket of their count.
impl Shapes for DetBatch<'_, f32> {
    fn feed(&self, h: &mut KeyHasher) {
        h.label_count(self.batch_idx.data.len());
    }
}

/// The labels, and the mask size (the first dimension is the batch size or the label count, already in the key).
impl Shapes for SegBatch<'_, f32> {
    fn feed(&self, h: &mut KeyHasher) {
        self.det.feed(h);
        h.shape(self.masks.shape.get(1..).unwrap_or_default());
    }
}

/// The labels (the keypoints' shape `[N, K, D]` follows from their count and the configuration).
impl Shapes for PoseBatch<'_, f32> {
    fn feed(&self, h: &mut KeyHasher) {
        self.det.feed(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(data: &'a [f32], shape: &'a [usize]) -> TensorRef<'a, f32> {
        TensorRef { data, shape }
    }

    fn det_key(levels: &[TensorRef<'_, f32>], labels: usize) -> ShapeKey {
        let idx = vec![0.0; labels];
        let (cls, boxes) = (vec![0.0; labels], vec![0.5; 4 * labels]);
        let (s1, s4) = ([labels, 1], [labels, 4]);
        let batch =
            DetBatch { batch_idx: t(&idx, std::slice::from_ref(&labels)), cls: t(&cls, &s1), bboxes: t(&boxes, &s4) };
        ShapeKey::of(&levels, &batch)
    }

    /// Shapes decide the key, data does not; the label count only by its power-of-two bucket.
    #[test]
    fn shapes_and_label_buckets_make_the_key() {
        let data = vec![0.0f32; 2 * 6 * 8 * 8];
        let other = vec![1.0f32; data.len()];
        let (a, b) = ([2, 6, 8, 8], [2, 6, 4, 16]);
        let key = det_key(&[t(&data, &a)], 5);
        assert_eq!(key, det_key(&[t(&other, &a)], 5), "tensor contents are not in the key");
        assert_ne!(key, det_key(&[t(&data, &b)], 5), "same length, other shape");
        let buckets = [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (7, 3), (8, 4), (100, 7), (127, 7), (128, 8)];
        for (n, bucket) in buckets {
            for (m, other_bucket) in buckets {
                let same = det_key(&[t(&data, &a)], n) == det_key(&[t(&data, &a)], m);
                assert_eq!(same, bucket == other_bucket, "{n} labels vs {m}");
            }
        }
    }

    /// How the shapes are split into tensors and levels counts, not just the flat list of numbers.
    #[test]
    fn the_split_into_tensors_is_in_the_key() {
        let data = vec![0.0f32; 64];
        let one_level = det_key(&[t(&data, &[2, 2, 4, 4])], 1);
        let two_levels = det_key(&[t(&data[..32], &[2, 2, 4]), t(&data[..4], &[4])], 1);
        assert_ne!(one_level, two_levels);
        let e2e = |m: &[TensorRef<'_, f32>], o: &[TensorRef<'_, f32>]| {
            ShapeKey::of(&E2EPreds { one2many: m, one2one: o }, &t(&data[..1], &[1]))
        };
        let (x, y) = (t(&data, &[1, 64]), t(&data[..32], &[1, 32]));
        assert_ne!(e2e(&[x, y], &[]), e2e(&[x], &[y]));
        // The separator keeps the batch's numbers apart from the predictions'.
        assert_ne!(ShapeKey::of(&t(&data, &[8, 8]), &t(&data, &[])), ShapeKey::of(&t(&data, &[8]), &t(&data, &[8])));
    }
}
