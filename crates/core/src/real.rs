//! The scalar type the math is written over.
//!
//! Production runs in `f32` (the reference's precision); the finite-difference gradient tests
//! run the very same code in `f64`, so one implementation serves both.

use num_traits::{Float, FloatConst, FromPrimitive, ToPrimitive};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

pub trait Real:
    Float
    + FloatConst
    + FromPrimitive
    + ToPrimitive
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// Converts a constant. Every constant of the reference is representable, so this never fails.
    #[inline(always)]
    fn c(x: f64) -> Self {
        Self::from_f64(x).unwrap_or_else(Self::nan)
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self.to_f64().unwrap_or(f64::NAN)
    }
    #[inline(always)]
    fn from_usize_(x: usize) -> Self {
        Self::c(x as f64)
    }
}

impl Real for f32 {}
impl Real for f64 {}
