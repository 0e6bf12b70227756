//! Times segmentation value_and_grad at B=16, 640×640, nc=80, nm=32, 160×160 prototypes, 8 labels per
//! image (a quick look for profiling; `npm run bench` is the real benchmark).
use std::time::Instant;
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, TaskLoss, TensorRef};

fn main() {
    let per: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(8);
    let (b, nc, r, nm) = (16usize, 80usize, 16usize, 32usize);
    let c = 4 * r + nc;
    let shapes: Vec<Vec<usize>> = [80usize, 40, 20].iter().map(|&s| vec![b, c, s, s]).collect();
    let a = 8400;
    let mut seed = 3u64;
    let mut rnd = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64) as f32
    };
    let levels: Vec<Vec<f32>> =
        shapes.iter().map(|s| (0..s.iter().product::<usize>()).map(|_| rnd() * 4.0 - 2.0).collect()).collect();
    let pm: Vec<f32> = (0..b * nm * a).map(|_| rnd() - 0.5).collect();
    let pr: Vec<f32> = (0..b * nm * 160 * 160).map(|_| rnd() - 0.5).collect();
    let n = b * per;
    let bi: Vec<f32> = (0..n).map(|i| (i / per) as f32).collect();
    let cls: Vec<f32> = (0..n).map(|i| (i % nc) as f32).collect();
    let boxes: Vec<f32> =
        (0..n).flat_map(|_| [0.2 + 0.6 * rnd(), 0.2 + 0.6 * rnd(), 0.05 + 0.3 * rnd(), 0.05 + 0.3 * rnd()]).collect();
    let masks: Vec<f32> = (0..b * 160 * 160).map(|i| ((i / 7) % (per + 1)) as f32).collect();
    let crit = V8SegmentationLoss::new(DetectionConfig {
        nc,
        reg_max: r,
        strides: vec![8.0, 16.0, 32.0],
        hyp: Hyp::default(),
        tal_topk: 10,
    })
    .unwrap();
    let feats: Vec<TensorRef<f32>> = levels.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
    let (s1, s2, s4, sm) = ([n], [n, 1], [n, 4], [b, 160, 160]);
    let (spm, spr) = ([b, nm, a], [b, nm, 160, 160]);
    let batch = SegBatch {
        det: DetBatch {
            batch_idx: TensorRef::new(&bi, &s1),
            cls: TensorRef::new(&cls, &s2),
            bboxes: TensorRef::new(&boxes, &s4),
        },
        masks: TensorRef::new(&masks, &sm),
    };
    let mut times = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        let out = crit
            .value_and_grad(
                SegPreds { feats: &feats, pred_masks: TensorRef::new(&pm, &spm), proto: TensorRef::new(&pr, &spr) },
                &batch,
            )
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("segmentation, labels/image {per}: median {:.1} ms (min {:.1})", times[2], times[0]);
}
