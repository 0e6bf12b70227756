//! Test support shared by the unit tests of the crate.

/// A deterministic pseudo-random stream in [0, 1) (no dev-dependency needed, same numbers everywhere).
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
}

/// Level tensors shaped `[B, 4·reg_max + nc, H, W]` (one per shape) with values uniform in [−2, 2). With
/// `reg_max == 1` the box channels hold raw distances, made `min_distance + |v|` so that the boxes are sensible.
pub(crate) fn random_levels(rng: &mut Lcg, shapes: &[Vec<usize>], reg_max: usize, min_distance: f64) -> Vec<Vec<f64>> {
    let mut levels: Vec<Vec<f64>> =
        shapes.iter().map(|s| (0..s.iter().product::<usize>()).map(|_| rng.next() * 4.0 - 2.0).collect()).collect();
    if reg_max == 1 {
        for (lv, s) in levels.iter_mut().zip(shapes) {
            let (c, hw) = (s[1], s[2] * s[3]);
            for b in 0..s[0] {
                for v in &mut lv[b * c * hw..b * c * hw + 4 * hw] {
                    *v = min_distance + v.abs();
                }
            }
        }
    }
    levels
}
