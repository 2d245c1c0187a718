//! The typed loops behind [`reduce_in_place`], [`reduce_into`], [`scale_div`] and
//! [`scale_mul`].

use super::isa::{self, Isa};
use crate::error::{Error, Result};
use crate::types::{DataType, ReduceOp};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Elements of a half-precision block widened to f32 at a time (3 × 4 KiB of f32 in L1).
const HALF_BLOCK: usize = 1024;

trait Elem: Copy {
    fn add(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    fn min(a: Self, b: Self) -> Self;
    fn max(a: Self, b: Self) -> Self;
    fn div(a: Self, n: usize) -> Self;
    fn and(a: Self, b: Self) -> Self;
    fn or(a: Self, b: Self) -> Self;
    fn xor(a: Self, b: Self) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline(always)] fn add(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            #[inline(always)] fn mul(a: Self, b: Self) -> Self { a.wrapping_mul(b) }
            #[inline(always)] fn min(a: Self, b: Self) -> Self { Ord::min(a, b) }
            #[inline(always)] fn max(a: Self, b: Self) -> Self { Ord::max(a, b) }
            #[inline(always)] fn div(a: Self, n: usize) -> Self { a / (n as $t) }
            #[inline(always)] fn and(a: Self, b: Self) -> Self { a & b }
            #[inline(always)] fn or(a: Self, b: Self) -> Self { a | b }
            #[inline(always)] fn xor(a: Self, b: Self) -> Self { a ^ b }
        }
    )*};
}
int_elem!(i8, u8, i32, u32, i64, u64);

macro_rules! float_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline(always)] fn add(a: Self, b: Self) -> Self { a + b }
            #[inline(always)] fn mul(a: Self, b: Self) -> Self { a * b }
            // NaN-propagating min/max written as selects so they vectorize.
            #[inline(always)] fn min(a: Self, b: Self) -> Self { if a < b || a.is_nan() { a } else { b } }
            #[inline(always)] fn max(a: Self, b: Self) -> Self { if a > b || a.is_nan() { a } else { b } }
            #[inline(always)] fn div(a: Self, n: usize) -> Self { a / (n as $t) }
            // Bitwise operators are refused for float types before any kernel runs
            // ([`ReduceOp::check_dtype`]); on the bits, should one ever get here.
            #[inline(always)] fn and(a: Self, b: Self) -> Self { Self::from_bits(a.to_bits() & b.to_bits()) }
            #[inline(always)] fn or(a: Self, b: Self) -> Self { Self::from_bits(a.to_bits() | b.to_bits()) }
            #[inline(always)] fn xor(a: Self, b: Self) -> Self { Self::from_bits(a.to_bits() ^ b.to_bits()) }
        }
    )*};
}
float_elem!(f32, f64);

/// `dst[i] = f(dst[i], src[i])` with the widest vectors this CPU has ([`isa`]).
fn in_place<T: Elem>(op: ReduceOp, dst: &mut [T], src: &[T]) {
    match isa::chosen() {
        // SAFETY: the CPU has AVX2 (`isa` detected it at run time).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { wide::in_place_avx2(op, dst, src) },
        _ => in_place_loop(op, dst, src),
    }
}

/// `dst[i] = f(a[i], b[i])` with the widest vectors this CPU has ([`isa`]).
fn into<T: Elem>(op: ReduceOp, dst: &mut [T], a: &[T], b: &[T]) {
    match isa::chosen() {
        // SAFETY: as in `in_place`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { wide::into_avx2(op, dst, a, b) },
        _ => into_loop(op, dst, a, b),
    }
}

/// The loops again, compiled with AVX2 enabled (inlined into each variant, so the compiler
/// vectorizes them for it).
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{in_place_loop, into_loop, Elem, ReduceOp};

    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn in_place_avx2<T: Elem>(op: ReduceOp, dst: &mut [T], src: &[T]) {
        in_place_loop(op, dst, src)
    }

    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn into_avx2<T: Elem>(op: ReduceOp, dst: &mut [T], a: &[T], b: &[T]) {
        into_loop(op, dst, a, b)
    }
}

/// `dst[i] = f(dst[i], src[i])`, monomorphized per operator so the loop vectorizes.
#[inline(always)]
fn in_place_loop<T: Elem>(op: ReduceOp, dst: &mut [T], src: &[T]) {
    macro_rules! run {
        ($f:expr) => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = $f(*d, *s);
            }
        };
    }
    match op {
        ReduceOp::Sum | ReduceOp::Avg | ReduceOp::PreMulSum => run!(T::add),
        ReduceOp::Prod => run!(T::mul),
        ReduceOp::Min => run!(T::min),
        ReduceOp::Max => run!(T::max),
        ReduceOp::BAnd => run!(T::and),
        ReduceOp::BOr => run!(T::or),
        ReduceOp::BXor => run!(T::xor),
    }
}

/// `dst[i] = f(a[i], b[i])`.
#[inline(always)]
fn into_loop<T: Elem>(op: ReduceOp, dst: &mut [T], a: &[T], b: &[T]) {
    macro_rules! run {
        ($f:expr) => {
            for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
                *d = $f(*x, *y);
            }
        };
    }
    match op {
        ReduceOp::Sum | ReduceOp::Avg | ReduceOp::PreMulSum => run!(T::add),
        ReduceOp::Prod => run!(T::mul),
        ReduceOp::Min => run!(T::min),
        ReduceOp::Max => run!(T::max),
        ReduceOp::BAnd => run!(T::and),
        ReduceOp::BOr => run!(T::or),
        ReduceOp::BXor => run!(T::xor),
    }
}

/// View bytes as `T`s. Fails (rather than misreading) when the length is not a multiple of
/// the element size or the address is misaligned.
fn typed<T>(b: &[u8]) -> Result<&[T]> {
    // SAFETY: every bit pattern is a valid value of the integer and float types this is
    // instantiated with; align_to only yields the aligned middle part.
    let (pre, mid, post) = unsafe { b.align_to::<T>() };
    if !pre.is_empty() || !post.is_empty() {
        return Err(Error::invalid(format!(
            "buffer at {:p} of {} bytes is not aligned to or a multiple of its {}-byte element",
            b.as_ptr(),
            b.len(),
            std::mem::size_of::<T>()
        )));
    }
    Ok(mid)
}

fn typed_mut<T>(b: &mut [u8]) -> Result<&mut [T]> {
    let (ptr, len) = (b.as_ptr(), b.len());
    // SAFETY: as in `typed`.
    let (pre, mid, post) = unsafe { b.align_to_mut::<T>() };
    if !pre.is_empty() || !post.is_empty() {
        return Err(Error::invalid(format!(
            "buffer at {ptr:p} of {len} bytes is not aligned to or a multiple of its {}-byte element",
            std::mem::size_of::<T>()
        )));
    }
    Ok(mid)
}

/// Half-precision `dst = a ⊕ b` (or `dst ⊕= b` when `a` is `None`) through f32 blocks.
fn half_kernel<H>(op: ReduceOp, dst: &mut [H], a: Option<&[H]>, b: &[H])
where
    [H]: HalfFloatSliceExt,
    H: Copy,
{
    let mut fa = [0f32; HALF_BLOCK];
    let mut fb = [0f32; HALF_BLOCK];
    let mut start = 0;
    while start < dst.len() {
        let n = (dst.len() - start).min(HALF_BLOCK);
        let d = &mut dst[start..start + n];
        match a {
            Some(a) => a[start..start + n].convert_to_f32_slice(&mut fa[..n]),
            None => d.convert_to_f32_slice(&mut fa[..n]),
        }
        b[start..start + n].convert_to_f32_slice(&mut fb[..n]);
        in_place::<f32>(op, &mut fa[..n], &fb[..n]);
        d.convert_from_f32_slice(&fa[..n]);
        start += n;
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::invalid(format!(
            "{what} has {got} bytes but the destination has {want}"
        )));
    }
    Ok(())
}

/// `dst[i] = dst[i] ⊕ src[i]` over byte buffers holding `dtype` elements.
///
/// Errors when the lengths differ or are not whole, aligned elements.
pub fn reduce_in_place(dtype: DataType, op: ReduceOp, dst: &mut [u8], src: &[u8]) -> Result<()> {
    check_len("reduction source", src.len(), dst.len())?;
    op.check_dtype(dtype)?;
    macro_rules! go {
        ($t:ty) => {
            in_place::<$t>(op, typed_mut::<$t>(dst)?, typed::<$t>(src)?)
        };
    }
    match dtype {
        DataType::Int8 => go!(i8),
        DataType::Uint8 => go!(u8),
        DataType::Int32 => go!(i32),
        DataType::Uint32 => go!(u32),
        DataType::Int64 => go!(i64),
        DataType::Uint64 => go!(u64),
        DataType::Float32 => go!(f32),
        DataType::Float64 => go!(f64),
        DataType::Float16 => half_kernel::<f16>(op, typed_mut(dst)?, None, typed(src)?),
        DataType::Bfloat16 => half_kernel::<bf16>(op, typed_mut(dst)?, None, typed(src)?),
    }
    Ok(())
}

/// `dst[i] = a[i] ⊕ b[i]` over byte buffers holding `dtype` elements.
pub fn reduce_into(
    dtype: DataType,
    op: ReduceOp,
    dst: &mut [u8],
    a: &[u8],
    b: &[u8],
) -> Result<()> {
    check_len("first reduction operand", a.len(), dst.len())?;
    check_len("second reduction operand", b.len(), dst.len())?;
    op.check_dtype(dtype)?;
    macro_rules! go {
        ($t:ty) => {
            into::<$t>(op, typed_mut::<$t>(dst)?, typed::<$t>(a)?, typed::<$t>(b)?)
        };
    }
    match dtype {
        DataType::Int8 => go!(i8),
        DataType::Uint8 => go!(u8),
        DataType::Int32 => go!(i32),
        DataType::Uint32 => go!(u32),
        DataType::Int64 => go!(i64),
        DataType::Uint64 => go!(u64),
        DataType::Float32 => go!(f32),
        DataType::Float64 => go!(f64),
        DataType::Float16 => half_kernel::<f16>(op, typed_mut(dst)?, Some(typed(a)?), typed(b)?),
        DataType::Bfloat16 => half_kernel::<bf16>(op, typed_mut(dst)?, Some(typed(a)?), typed(b)?),
    }
    Ok(())
}

/// Divide every element by `n` (the final step of [`ReduceOp::Avg`]); integer division
/// truncates toward zero.
pub fn scale_div(dtype: DataType, dst: &mut [u8], n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("average over 0 ranks"));
    }
    macro_rules! go {
        ($t:ty) => {
            for x in typed_mut::<$t>(dst)? {
                *x = <$t as Elem>::div(*x, n);
            }
        };
    }
    match dtype {
        DataType::Int8 => go!(i8),
        DataType::Uint8 => go!(u8),
        DataType::Int32 => go!(i32),
        DataType::Uint32 => go!(u32),
        DataType::Int64 => go!(i64),
        DataType::Uint64 => go!(u64),
        DataType::Float32 => go!(f32),
        DataType::Float64 => go!(f64),
        DataType::Float16 => {
            for x in typed_mut::<f16>(dst)? {
                *x = f16::from_f32(x.to_f32() / n as f32);
            }
        }
        DataType::Bfloat16 => {
            for x in typed_mut::<bf16>(dst)? {
                *x = bf16::from_f32(x.to_f32() / n as f32);
            }
        }
    }
    Ok(())
}

/// `dst[i] = src[i] * factor` (the premultiplication of [`ReduceOp::PreMulSum`]), or
/// `dst[i] *= factor` when `src` is `None`. Floats multiply in their own precision (halves
/// through f32); integers multiply wrapping by `factor`, which must be a whole number in
/// `i64`'s range.
pub fn scale_mul(dtype: DataType, dst: &mut [u8], src: Option<&[u8]>, factor: f64) -> Result<()> {
    if let Some(s) = src {
        check_len("scaled source", s.len(), dst.len())?;
    }
    let whole = factor_as_int(dtype, factor)?;
    macro_rules! go {
        ($t:ty, $f:expr) => {{
            let d = typed_mut::<$t>(dst)?;
            match src {
                Some(s) => {
                    for (d, s) in d.iter_mut().zip(typed::<$t>(s)?) {
                        *d = $f(*s);
                    }
                }
                None => {
                    for d in d.iter_mut() {
                        *d = $f(*d);
                    }
                }
            }
        }};
    }
    macro_rules! int {
        ($t:ty) => {{
            let f = whole as $t;
            go!($t, |x: $t| x.wrapping_mul(f))
        }};
    }
    match dtype {
        DataType::Int8 => int!(i8),
        DataType::Uint8 => int!(u8),
        DataType::Int32 => int!(i32),
        DataType::Uint32 => int!(u32),
        DataType::Int64 => int!(i64),
        DataType::Uint64 => int!(u64),
        DataType::Float32 => go!(f32, |x: f32| x * factor as f32),
        DataType::Float64 => go!(f64, |x: f64| x * factor),
        DataType::Float16 => go!(f16, |x: f16| f16::from_f32(x.to_f32() * factor as f32)),
        DataType::Bfloat16 => go!(bf16, |x: bf16| bf16::from_f32(x.to_f32() * factor as f32)),
    }
    Ok(())
}

/// A premultiplication factor as the integer an integer type multiplies by (0 for float
/// types, which do not use it); errors when it is not finite, or, for an integer type, not
/// whole or beyond 2^53.
pub fn factor_as_int(dtype: DataType, factor: f64) -> Result<i64> {
    if !factor.is_finite() {
        return Err(Error::invalid(format!(
            "premul_sum factor {factor} is not a finite number"
        )));
    }
    if dtype.is_float() {
        return Ok(0);
    }
    if factor.fract() != 0.0 {
        return Err(Error::invalid(format!(
            "premul_sum factor {factor} is not a whole number, which {dtype} needs"
        )));
    }
    // Every integer up to 2^53 is an exact f64; beyond, the factor would already be rounded.
    if factor.abs() > (1u64 << 53) as f64 {
        return Err(Error::invalid(format!(
            "premul_sum factor {factor} of {dtype} is beyond 2^53, the largest integer factor kept exact"
        )));
    }
    Ok(factor as i64)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Values that exercise wrapping, signs, NaN and infinities, from a fixed LCG.
    fn values<T: Copy>(n: usize, seed: u64, make: impl Fn(u64) -> T) -> Vec<T> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                make(x >> 11)
            })
            .collect()
    }

    /// The AVX2 variants give bit for bit what the baseline loops give, for every operator,
    /// at lengths that leave vector tails.
    fn same<T: Elem + PartialEq + std::fmt::Debug>(make: impl Fn(u64) -> T + Copy) {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let bits = |v: &[T]| -> Vec<u8> {
            // SAFETY: plain-old-data elements viewed as bytes.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
                .to_vec()
        };
        for n in [0, 1, 7, 31, 64, 1000, 4099] {
            let (a, b) = (
                values(n, 1 + n as u64, make),
                values(n, 99 + n as u64, make),
            );
            for op in ReduceOp::ALL {
                let (mut x, mut y) = (a.clone(), a.clone());
                in_place_loop(op, &mut x, &b);
                // SAFETY: AVX2 was detected above.
                unsafe { wide::in_place_avx2(op, &mut y, &b) };
                assert_eq!(bits(&x), bits(&y), "in place, {op:?}, n = {n}");
                let (mut x, mut y) = (b.clone(), b.clone());
                into_loop(op, &mut x, &a, &b);
                // SAFETY: AVX2 was detected above.
                unsafe { wide::into_avx2(op, &mut y, &a, &b) };
                assert_eq!(bits(&x), bits(&y), "into, {op:?}, n = {n}");
            }
        }
    }

    #[test]
    fn wide_variants_match_the_baseline_bit_for_bit() {
        same(|r| r as u8 as i8);
        same(|r| r as u8);
        same(|r| r as i32);
        same(|r| r as u32);
        same(|r| r as i64);
        same(|r| r);
        let f = |r: u64| match r % 17 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => -0.0,
            _ => (r % 2001) as f32 / 7.0 - 140.0,
        };
        same(f);
        same(move |r| f(r) as f64);
    }
}
