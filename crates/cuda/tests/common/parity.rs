//! Test bodies shared by the two ways this crate runs its kernels: on a GPU (tests/*.rs, `CudaDetectionLoss::new`)
//! and on the CPU emulator (src/detection/tests.rs, `CudaDetectionLoss::emulated`). The including module brings
//! `CudaDetectionLoss`, `CudaE2EDetectLoss` and `CudaTVPDetectLoss` into scope and a `common` module (mod.rs).
//!
//! Every body takes a [`Backend`]: `Cpu` checks the CPU backend against the reference fixtures (1e-4); `Cuda`
//! checks the CUDA backend against the fixtures (1e-4) and against the CPU backend (relative 1e-5, same
//! positives and GT indices).

#![allow(dead_code, unused_macros)] // each includer uses a part (tests/oom.rs: the synthetic cases only)

use yolo_loss_core::assigner::AssignerConfig;
use yolo_loss_core::blocks::assign_dense;
use yolo_loss_core::detection::{decodes_all_up_front, labels_and_gt, GradBufs, Head, LossValues};
use yolo_loss_core::dfl::softmax_expectation;
use yolo_loss_core::e2e::{E2EDetectLoss, E2EPreds};
use yolo_loss_core::prompts::TVPDetectLoss;
use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, LossOutput, Real, Result, TaskLoss, TensorRef, V8DetectionLoss};

use super::common::{
    assert_close_tol, check_loss_output, config, grad_names, levels, load_kind, refs, to_f64, Fixture, Labels, Lcg,
    Owned,
};
use super::{CudaDetectionLoss, CudaE2EDetectLoss, CudaTVPDetectLoss};

/// The tests of one way of running the kernels (GPU or emulator): one per test body below, so that both run the
/// same set. The caller names them (scripts/gpu-check.sh skips the emulator's by name) and gives `$makers`,
/// `fn(test: &str) -> Option<Makers>`: None after saying why the test is skipped.
macro_rules! kernel_tests {
    ($makers:ident => $v8:ident, $e2e:ident, $tvp:ident, $synthetic:ident, $errors:ident) => {
        #[test]
        fn $v8() {
            let Some(mk) = $makers(stringify!($v8)) else { return };
            parity::v8_detection_fixtures(&parity::Backend::Cuda(mk));
        }

        #[test]
        fn $e2e() {
            let Some(mk) = $makers(stringify!($e2e)) else { return };
            parity::e2e_fixtures(&parity::Backend::Cuda(mk));
        }

        #[test]
        fn $tvp() {
            let Some(mk) = $makers(stringify!($tvp)) else { return };
            parity::tvp_synthetic(&mk);
            parity::tvp_fixtures(&parity::Backend::Cuda(mk));
        }

        #[test]
        fn $synthetic() {
            let Some(mk) = $makers(stringify!($synthetic)) else { return };
            parity::synthetic_cases(&mk);
        }

        #[test]
        fn $errors() {
            let Some(mk) = $makers(stringify!($errors)) else { return };
            parity::errors_match_cpu(&mk);
        }
    };
}

/// How the CUDA loss types are built (GPU or emulator).
pub struct Makers<'a> {
    pub det: &'a dyn Fn(DetectionConfig) -> Result<CudaDetectionLoss>,
    pub e2e: &'a dyn Fn(DetectionConfig) -> Result<CudaE2EDetectLoss>,
    pub tvp: &'a dyn Fn(DetectionConfig) -> Result<CudaTVPDetectLoss>,
}

pub enum Backend<'a> {
    Cpu,
    Cuda(Makers<'a>),
}

/// CUDA against CPU: relative 1e-5, with a floor of 1e-6 of the tensor's largest magnitude for elements that
/// cancel to ~0 (a class gradient σ(x)·s − n·s, a DFL gradient made of much larger terms).
pub fn assert_backends_close(what: &str, cuda: &[f32], cpu: &[f32]) {
    assert_close_tol(what, &to_f64(cuda), &to_f64(cpu), 1e-5, 1e-6);
}

fn check_fixture_out(f: &Fixture, who: &str, out: &LossOutput<f32>, grad_names: &[String]) {
    check_loss_output(&format!("{who} {}", f.name), f, out, grad_names);
}

/// `value_and_grad_into` on zero-filled buffers shaped like `out.grads` returns `out`'s loss and items and fills
/// the buffers with `out.grads`, bitwise.
fn check_into(what: &str, out: &LossOutput<f32>, into: impl FnOnce(GradBufs<f32>) -> Result<LossValues<f32>>) {
    let mut bufs: Vec<Vec<f32>> = out.grads.iter().map(|g| vec![0.0; g.len()]).collect();
    let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
    let (loss, items) = into(&mut slices).unwrap();
    assert_eq!((&loss, &items), (&out.loss, &out.loss_items), "{what}: value_and_grad_into");
    assert_eq!(bufs, out.grads, "{what}: value_and_grad_into gradients");
}

pub fn compare_outputs(what: &str, cuda: &LossOutput<f32>, cpu: &LossOutput<f32>) {
    assert_backends_close(&format!("{what} loss"), &cuda.loss, &cpu.loss);
    assert_backends_close(&format!("{what} loss_items"), &cuda.loss_items, &cpu.loss_items);
    assert_eq!(cuda.grads.len(), cpu.grads.len(), "{what}: gradient count");
    for (l, (g, c)) in cuda.grads.iter().zip(&cpu.grads).enumerate() {
        assert!(g.iter().all(|v| v.is_finite()), "{what}: non-finite (unwritten?) gradient in level {l}");
        assert_backends_close(&format!("{what} grad[{l}]"), g, c);
    }
}

/// The CPU backend's assignment for a detection call, through the core's dense assigner fed exactly what the
/// CPU loss feeds its own (σ of the class logits, pixel boxes decoded in the form the CPU loss picks per image).
/// Returns per image (anchor, GT slot, target score) of the positives.
pub fn cpu_assignment(
    cfg: &DetectionConfig,
    feats: &[TensorRef<f32>],
    batch: &DetBatch<f32>,
    cls_ch0: usize,
    nc: usize,
) -> Vec<Vec<(usize, usize, f32)>> {
    let r = cfg.reg_max;
    let b = feats[0].shape[0];
    let c = feats[0].shape[1];
    let head = Head::validate_shapes(feats, &cfg.strides, r, c, cls_ch0, nc).unwrap();
    let (_, gt) = labels_and_gt(&head, batch, cfg.tal_topk).unwrap();
    let grid = &head.grid;
    let a = grid.num_anchors;
    let m = gt.max_labels;
    if m == 0 {
        return vec![Vec::new(); b];
    }
    let mut scores = vec![0f32; b * a * nc];
    let mut boxes = vec![0f32; b * a * 4];
    let mut anc = vec![0f32; a * 2];
    for img in 0..b {
        // The CPU loss's choice of soft-argmax form for this image.
        let bulk = decodes_all_up_front(grid, &gt.gt_boxes(img));
        for (l, lv) in grid.levels.iter().enumerate() {
            let hw = lv.len();
            let data = &feats[l].data[img * c * hw..(img + 1) * c * hw];
            let mut d = vec![[0f32; 4]; hw];
            for s in 0..4 {
                let z = &data[s * r * hw..(s + 1) * r * hw];
                let mut side = vec![0f32; hw];
                if r == 1 {
                    side.copy_from_slice(z);
                } else if bulk {
                    <f32 as Real>::softmax_expect_cells(z, hw, r, &mut side);
                } else {
                    let mut probs = vec![0f32; r];
                    for (cell, o) in side.iter_mut().enumerate() {
                        let bins: Vec<f32> = (0..r).map(|k| z[k * hw + cell]).collect();
                        *o = softmax_expectation(&bins, &mut probs);
                    }
                }
                for cell in 0..hw {
                    d[cell][s] = side[cell];
                }
            }
            let st = lv.stride as f32;
            for cell in 0..hw {
                let (x, y) = ((cell % lv.w) as f32 + 0.5, (cell / lv.w) as f32 + 0.5);
                let an = lv.offset + cell;
                anc[2 * an] = x * st;
                anc[2 * an + 1] = y * st;
                let g = [x - d[cell][0], y - d[cell][1], x + d[cell][2], y + d[cell][3]];
                boxes[(img * a + an) * 4..(img * a + an) * 4 + 4].copy_from_slice(&[
                    g[0] * st,
                    g[1] * st,
                    g[2] * st,
                    g[3] * st,
                ]);
                for k in 0..nc {
                    let xv = data[(cls_ch0 + k) * hw + cell];
                    scores[(img * a + an) * nc + k] = 1.0 / (1.0 + (-xv).exp());
                }
            }
        }
    }
    let gl: Vec<f32> = gt.cls.clone();
    let gb: Vec<f32> = gt.boxes.iter().flatten().copied().collect();
    let mg: Vec<f32> = gt.valid.iter().map(|&v| v as u8 as f32).collect();
    let (s_sc, s_bx, s_an, s_gl, s_gb) = ([b, a, nc], [b, a, 4], [a, 2], [b, m, 1], [b, m, 4]);
    let acfg = AssignerConfig::for_loss(cfg.tal_topk, nc);
    let out = assign_dense(
        &acfg,
        TensorRef::new(&scores, &s_sc),
        TensorRef::new(&boxes, &s_bx),
        TensorRef::new(&anc, &s_an),
        TensorRef::new(&gl, &s_gl),
        TensorRef::new(&gb, &s_gb),
        TensorRef::new(&mg, &s_gl),
    )
    .unwrap();
    (0..b)
        .map(|img| {
            (0..a)
                .filter(|&an| out.fg_mask[img * a + an])
                .map(|an| {
                    let i = img * a + an;
                    let score = (0..nc).map(|k| out.target_scores[i * nc + k]).fold(0.0f32, f32::max);
                    (an, out.target_gt_idx[i] as usize, score)
                })
                .collect()
        })
        .collect()
}

/// Same positives, same GT slots, scores within tolerance.
pub fn compare_assignment(what: &str, cuda: &[Vec<(usize, usize, f32)>], cpu: &[Vec<(usize, usize, f32)>]) {
    assert_eq!(cuda.len(), cpu.len(), "{what}: images");
    for (img, (g, c)) in cuda.iter().zip(cpu).enumerate() {
        let ga: Vec<(usize, usize)> = g.iter().map(|p| (p.0, p.1)).collect();
        let ca: Vec<(usize, usize)> = c.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(ga, ca, "{what}: image {img}: (anchor, GT) of the positives differ");
        let gs: Vec<f32> = g.iter().map(|p| p.2).collect();
        let cs: Vec<f32> = c.iter().map(|p| p.2).collect();
        assert_backends_close(&format!("{what} image {img} target scores"), &gs, &cs);
    }
}

/// Every v8DetectionLoss fixture.
pub fn v8_detection_fixtures(backend: &Backend) {
    for f in load_kind("v8DetectionLoss") {
        let cfg = config(&f);
        let feats = levels(&f, "preds");
        let lab = Labels::of(&f);
        let names = grad_names("grad.preds", feats.len());
        let cpu = V8DetectionLoss::new(cfg.clone()).unwrap();
        let cpu_out = cpu.value_and_grad(&refs(&feats), &lab.det()).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        match backend {
            Backend::Cpu => check_fixture_out(&f, "cpu", &cpu_out, &names),
            Backend::Cuda(mk) => {
                let gpu = (mk.det)(cfg.clone()).unwrap();
                let out =
                    gpu.value_and_grad(&refs(&feats), &lab.det()).unwrap_or_else(|e| panic!("cuda {}: {e}", f.name));
                check_fixture_out(&f, "cuda", &out, &names);
                compare_outputs(&format!("cuda vs cpu {}", f.name), &out, &cpu_out);
                let plain = gpu.call(&refs(&feats), &lab.det()).unwrap();
                assert!(plain.grads.is_empty());
                assert_backends_close(&format!("{} call", f.name), &plain.loss, &out.loss);
                check_into(&f.name, &out, |g| gpu.value_and_grad_into(&refs(&feats), &lab.det(), g));
                let asg = gpu.assignment(&refs(&feats), &lab.det()).unwrap();
                let want = cpu_assignment(&cfg, &refs(&feats), &lab.det(), 4 * cfg.reg_max, cfg.nc);
                compare_assignment(&f.name, &asg, &want);
            }
        }
    }
}

/// Every E2EDetectLoss fixture.
pub fn e2e_fixtures(backend: &Backend) {
    for f in load_kind("E2EDetectLoss") {
        let cfg = config(&f);
        let (o2m, o2o) = (levels(&f, "preds.one2many"), levels(&f, "preds.one2one"));
        let lab = Labels::of(&f);
        let mut names = grad_names("grad.one2many", o2m.len());
        names.extend(grad_names("grad.one2one", o2o.len()));
        let cpu = E2EDetectLoss::new(cfg.clone()).unwrap();
        let cpu_out = cpu.value_and_grad(E2EPreds { one2many: &refs(&o2m), one2one: &refs(&o2o) }, &lab.det()).unwrap();
        match backend {
            Backend::Cpu => check_fixture_out(&f, "cpu", &cpu_out, &names),
            Backend::Cuda(mk) => {
                let gpu = (mk.e2e)(cfg.clone()).unwrap();
                let out = gpu
                    .value_and_grad(E2EPreds { one2many: &refs(&o2m), one2one: &refs(&o2o) }, &lab.det())
                    .unwrap_or_else(|e| panic!("cuda {}: {e}", f.name));
                check_fixture_out(&f, "cuda", &out, &names);
                compare_outputs(&format!("cuda vs cpu {}", f.name), &out, &cpu_out);
                check_into(&f.name, &out, |g| {
                    gpu.value_and_grad_into(E2EPreds { one2many: &refs(&o2m), one2one: &refs(&o2o) }, &lab.det(), g)
                });
                let plain = gpu.call(E2EPreds { one2many: &refs(&o2m), one2one: &refs(&o2o) }, &lab.det()).unwrap();
                assert_backends_close(&format!("{} call", f.name), &plain.loss, &out.loss);
            }
        }
    }
}

/// Every TVPDetectLoss fixture.
pub fn tvp_fixtures(backend: &Backend) {
    for f in load_kind("TVPDetectLoss") {
        let cfg = config(&f);
        let feats = levels(&f, "preds");
        let lab = Labels::of(&f);
        let names = grad_names("grad.preds", feats.len());
        let cpu_out = TVPDetectLoss::new(cfg.clone()).unwrap().value_and_grad(&refs(&feats), &lab.det()).unwrap();
        match backend {
            Backend::Cpu => check_fixture_out(&f, "cpu", &cpu_out, &names),
            Backend::Cuda(mk) => {
                let gpu = (mk.tvp)(cfg.clone()).unwrap();
                let out =
                    gpu.value_and_grad(&refs(&feats), &lab.det()).unwrap_or_else(|e| panic!("cuda {}: {e}", f.name));
                check_fixture_out(&f, "cuda", &out, &names);
                compare_outputs(&format!("cuda vs cpu {}", f.name), &out, &cpu_out);
                check_into(&f.name, &out, |g| gpu.value_and_grad_into(&refs(&feats), &lab.det(), g));
                let mut wrong = vec![0.0f32; 3];
                let e = gpu.value_and_grad_into(&refs(&feats), &lab.det(), &mut [wrong.as_mut_slice()]).unwrap_err();
                assert_eq!(e.code, yolo_loss_core::ErrorCode::ShapeMismatch, "{e}");
            }
        }
    }
}

/// A synthetic detection case: B images of `img_h × img_w` pixels at strides 8/16/32, random logits, `per_image`
/// labels per image with boxes of side `min_side..max_side` (fractions of the image).
pub struct Synthetic {
    pub cfg: DetectionConfig,
    pub levels: Vec<Owned>,
    pub labels: Labels,
}

pub struct SynthSpec {
    pub batch: usize,
    pub img_h: usize,
    pub img_w: usize,
    pub nc: usize,
    pub reg_max: usize,
    pub per_image: usize,
    pub min_side: f32,
    pub max_side: f32,
    pub topk: usize,
    /// Extra channels between the box channels and the class channels' end (text prompts of TVP).
    pub extra_channels: usize,
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            batch: 2,
            img_h: 96,
            img_w: 128,
            nc: 5,
            reg_max: 16,
            per_image: 6,
            min_side: 0.05,
            max_side: 0.6,
            topk: 10,
            extra_channels: 0,
            seed: 1,
        }
    }
}

pub fn synthetic(spec: &SynthSpec) -> Synthetic {
    let strides = [8.0, 16.0, 32.0];
    let mut rng = Lcg(spec.seed);
    let c = 4 * spec.reg_max + spec.extra_channels + spec.nc;
    let levels: Vec<Owned> = strides
        .iter()
        .map(|&s| {
            let (h, w) = ((spec.img_h as f64 / s).ceil() as usize, (spec.img_w as f64 / s).ceil() as usize);
            let shape = vec![spec.batch, c, h, w];
            let hw = h * w;
            let mut data: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.uniform(-4.0, 4.0)).collect();
            if spec.reg_max == 1 {
                for b in 0..spec.batch {
                    for i in 0..4 * hw {
                        data[b * c * hw + i] = rng.uniform(0.2, 6.0);
                    }
                }
            }
            Owned { data, shape }
        })
        .collect();
    let (mut bi, mut cls, mut bb) = (vec![], vec![], vec![]);
    for b in 0..spec.batch {
        for _ in 0..spec.per_image {
            let (w, h) = (rng.uniform(spec.min_side, spec.max_side), rng.uniform(spec.min_side, spec.max_side));
            let (cx, cy) = (rng.uniform(w / 2.0, 1.0 - w / 2.0), rng.uniform(h / 2.0, 1.0 - h / 2.0));
            bi.push(b as f32);
            cls.push((rng.next_u32() as usize % spec.nc) as f32);
            bb.extend_from_slice(&[cx, cy, w, h]);
        }
    }
    let n = bi.len();
    let labels = Labels {
        bi: Owned { data: bi, shape: vec![n] },
        cls: Owned { data: cls, shape: vec![n, 1] },
        bb: Owned { data: bb, shape: vec![n, 4] },
    };
    let cfg = DetectionConfig {
        nc: spec.nc,
        reg_max: spec.reg_max,
        strides: strides.to_vec(),
        hyp: Hyp::default(),
        tal_topk: spec.topk,
    };
    Synthetic { cfg, levels, labels }
}

/// A synthetic case on the CUDA backend against the CPU backend: loss, gradient and assignment.
pub fn synthetic_matches_cpu(what: &str, mk: &Makers, s: &Synthetic) {
    let feats = refs(&s.levels);
    let batch = s.labels.det();
    let cpu = V8DetectionLoss::new(s.cfg.clone()).unwrap().value_and_grad(&feats, &batch).unwrap();
    let gpu = (mk.det)(s.cfg.clone()).unwrap();
    let out = gpu.value_and_grad(&feats, &batch).unwrap_or_else(|e| panic!("{what}: {e}"));
    compare_outputs(what, &out, &cpu);
    let asg = gpu.assignment(&feats, &batch).unwrap();
    let want = cpu_assignment(&s.cfg, &feats, &batch, 4 * s.cfg.reg_max, s.cfg.nc);
    compare_assignment(what, &asg, &want);
}

/// Small synthetic cases that exercise the assigner's rules: duplicate GTs (conflicts, ties on the lowest GT),
/// tiny GTs (fewer than k positive metrics: the zero fill), a GT at the origin (padding by the validity rule),
/// top-1, reg_max 1, a non-square image, many labels per image.
pub fn synthetic_cases(mk: &Makers) {
    let base = SynthSpec::default();
    let cases: Vec<(&str, SynthSpec)> = vec![
        ("plain", SynthSpec { ..base }),
        ("tiny boxes (zero fill)", SynthSpec { min_side: 0.01, max_side: 0.06, seed: 2, ..base }),
        ("top-1", SynthSpec { topk: 1, seed: 3, ..base }),
        ("top-13", SynthSpec { topk: 13, seed: 4, ..base }),
        ("reg_max 1", SynthSpec { reg_max: 1, seed: 5, ..base }),
        ("crowded", SynthSpec { per_image: 40, min_side: 0.03, max_side: 0.3, seed: 6, ..base }),
        ("square nc 1", SynthSpec { img_h: 64, img_w: 64, nc: 1, seed: 7, ..base }),
        // Boxes over more than 512 finest-level cells: the assign kernel runs 1024-thread blocks (host.rs).
        (
            "large boxes",
            SynthSpec { img_h: 320, img_w: 320, per_image: 3, min_side: 0.5, max_side: 0.95, seed: 12, ..base },
        ),
    ];
    for (name, spec) in cases {
        let s = synthetic(&spec);
        synthetic_matches_cpu(name, mk, &s);
    }
    // GTs along the top edge: their few inside anchors have low indices and mostly zero metrics, so the top-k
    // fill picks them (and several GTs claim the same zero-overlap anchors: conflicts resolved to GT slot 0).
    for seed in [21u64, 22, 23] {
        let mut s = synthetic(&SynthSpec { per_image: 8, seed, ..base });
        let mut rng = Lcg(seed * 7);
        for bb in s.labels.bb.data.chunks_mut(4) {
            let w = rng.uniform(0.03, 0.9);
            bb.copy_from_slice(&[
                rng.uniform(w / 2.0, 1.0 - w / 2.0),
                rng.uniform(0.02, 0.05),
                w,
                rng.uniform(0.04, 0.08),
            ]);
        }
        synthetic_matches_cpu(&format!("top-edge GTs (seed {seed})"), mk, &s);
    }
    // Duplicated labels and a GT at the origin: exact ties between GTs, and an invalid slot 0.
    let mut s = synthetic(&SynthSpec { per_image: 4, seed: 8, ..base });
    let bb = &mut s.labels.bb.data;
    let first: Vec<f32> = bb[0..4].to_vec();
    bb[4..8].copy_from_slice(&first); // label 1 = label 0 (same class? not necessarily)
    bb[8..12].copy_from_slice(&[0.0, 0.0, 0.0, 0.0]); // label 2: box at the origin → padding by the validity rule
    synthetic_matches_cpu("duplicates and origin box", mk, &s);
    let mut s = synthetic(&SynthSpec { per_image: 3, seed: 9, ..base });
    s.labels.bb.data[0..4].copy_from_slice(&[0.0, 0.0, 0.0, 0.0]); // slot 0 of image 0 invalid
    synthetic_matches_cpu("invalid slot 0", mk, &s);
}

/// TVP with text-prompt channels between the box and visual-prompt channels, against the CPU backend.
pub fn tvp_synthetic(mk: &Makers) {
    // Channels: 4R box | 4 text prompts | 3 visual prompts. Labels index the visual prompts.
    let s = synthetic(&SynthSpec { nc: 3, extra_channels: 4, seed: 11, ..SynthSpec::default() });
    let cfg = DetectionConfig { nc: 4, ..s.cfg.clone() };
    let feats = refs(&s.levels);
    let cpu = TVPDetectLoss::new(cfg.clone()).unwrap().value_and_grad(&feats, &s.labels.det()).unwrap();
    let out = (mk.tvp)(cfg.clone()).unwrap().value_and_grad(&feats, &s.labels.det()).unwrap();
    compare_outputs("tvp synthetic", &out, &cpu);
    let cpu_call = TVPDetectLoss::new(cfg.clone()).unwrap().call(&feats, &s.labels.det()).unwrap();
    let call = (mk.tvp)(cfg).unwrap().call(&feats, &s.labels.det()).unwrap();
    assert_backends_close("tvp call", &call.loss, &cpu_call.loss);
    assert!(call.grads.is_empty());
}

/// Bad input: the same error code and message as the CPU backend, non-finite predictions included (detected on
/// the device), also when a label error comes with them (the CPU backend reports the prediction first).
pub fn errors_match_cpu(mk: &Makers) {
    let s = synthetic(&SynthSpec { per_image: 2, seed: 12, ..SynthSpec::default() });
    let cpu = V8DetectionLoss::new(s.cfg.clone()).unwrap();
    let gpu = (mk.det)(s.cfg.clone()).unwrap();
    let check = |what: &str, lv: &[Owned], labels: &Labels| {
        let feats = refs(lv);
        let want = cpu.value_and_grad(&feats, &labels.det()).expect_err("bad input must be rejected");
        let got = gpu.value_and_grad(&feats, &labels.det()).expect_err("bad input must be rejected");
        assert_eq!((got.code, &got.message), (want.code, &want.message), "{what}");
        let got = gpu.call(&feats, &labels.det()).expect_err("bad input must be rejected");
        assert_eq!((got.code, &got.message), (want.code, &want.message), "{what} (call)");
    };
    let mut lv: Vec<Owned> = s.levels.iter().map(|o| Owned { data: o.data.clone(), shape: o.shape.clone() }).collect();
    let hw1 = lv[1].shape[2] * lv[1].shape[3];
    lv[1].data[3 * 16 * hw1 + 5] = f32::NAN; // a box logit
    check("NaN box logit", &lv, &s.labels);
    let mut lv2: Vec<Owned> = s.levels.iter().map(|o| Owned { data: o.data.clone(), shape: o.shape.clone() }).collect();
    let n = lv2[2].data.len();
    lv2[2].data[n - 1] = f32::INFINITY; // a class logit
    check("inf class logit", &lv2, &s.labels);
    let mut bad = Labels {
        bi: Owned { data: s.labels.bi.data.clone(), shape: s.labels.bi.shape.clone() },
        cls: Owned { data: s.labels.cls.data.clone(), shape: s.labels.cls.shape.clone() },
        bb: Owned { data: s.labels.bb.data.clone(), shape: s.labels.bb.shape.clone() },
    };
    bad.cls.data[0] = 99.0;
    check("class out of range", &s.levels, &bad);
    check("class out of range and NaN", &lv, &bad);
    let mut short = s.levels.iter().map(|o| Owned { data: o.data.clone(), shape: o.shape.clone() }).collect::<Vec<_>>();
    short[1].shape[3] += 1;
    let missing = short[1].shape.iter().product::<usize>() - short[1].data.len();
    short[1].data.extend(vec![0.0; missing]);
    check("wrong level size", &short, &s.labels);
}
