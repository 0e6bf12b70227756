//! Times value_and_grad at B=16, 640×640, nc=80 (a quick look; `npm run bench` is the real benchmark).
use std::time::Instant;
use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, TaskLoss, TensorRef, V8DetectionLoss};

fn main() {
    let labels_per_image: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(8);
    let (b, nc, r) = (16usize, 80usize, 16usize);
    let c = 4 * r + nc;
    let shapes: Vec<Vec<usize>> = [80usize, 40, 20].iter().map(|&s| vec![b, c, s, s]).collect();
    let mut seed = 1u64;
    let mut rnd = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64) as f32
    };
    let levels: Vec<Vec<f32>> =
        shapes.iter().map(|s| (0..s.iter().product::<usize>()).map(|_| rnd() * 4.0 - 2.0).collect()).collect();
    let n = b * labels_per_image;
    let bi: Vec<f32> = (0..n).map(|i| (i / labels_per_image) as f32).collect();
    let cls: Vec<f32> = (0..n).map(|i| (i % nc) as f32).collect();
    let boxes: Vec<f32> =
        (0..n).flat_map(|_| [0.1 + 0.8 * rnd(), 0.1 + 0.8 * rnd(), 0.02 + 0.2 * rnd(), 0.02 + 0.2 * rnd()]).collect();
    let crit = V8DetectionLoss::new(DetectionConfig {
        nc,
        reg_max: r,
        strides: vec![8.0, 16.0, 32.0],
        hyp: Hyp::default(),
        tal_topk: 10,
    })
    .unwrap();
    let feats: Vec<TensorRef<f32>> = levels.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
    let (s1, s2, s4) = ([n], [n, 1], [n, 4]);
    let batch = DetBatch {
        batch_idx: TensorRef::new(&bi, &s1),
        cls: TensorRef::new(&cls, &s2),
        bboxes: TensorRef::new(&boxes, &s4),
    };
    let mut times = vec![];
    for _ in 0..7 {
        let t = Instant::now();
        let out = crit.value_and_grad(&feats, &batch).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if std::env::var("PROBE").is_ok() {
        for _ in 0..3 {
            let t = Instant::now();
            std::hint::black_box(crit.call(&feats, &batch).unwrap());
            println!("call (no grad): {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        }
        let x: Vec<f32> = levels[0].clone();
        let mut g = vec![0.0f32; x.len()];
        for _ in 0..3 {
            let t = Instant::now();
            let s = <f32 as yolo_loss_core::Real>::bce_zero(&x, Some(&mut g), 0.1);
            let dt = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let fin = <f32 as yolo_loss_core::Real>::all_finite(&x);
            let df = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let z = vec![0.0f32; x.len()];
            std::hint::black_box(&z);
            let dz = t.elapsed().as_secs_f64() * 1e3;
            println!("bce over {} elems: {dt:.1} ms, finite {df:.1} ms, alloc {dz:.1} ms ({s} {fin})", x.len());
        }
    }
    println!("labels/image {labels_per_image}: median {:.1} ms (min {:.1})", times[3], times[0]);
}

#[allow(dead_code)]
fn unused() {}
