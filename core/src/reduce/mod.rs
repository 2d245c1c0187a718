//! Reduction kernels: element-wise `dst = a ⊕ b` for every [`DataType`] and [`ReduceOp`].
//!
//! The kernels are plain loops over typed slices that the compiler auto-vectorizes
//! (`sum`/`min`/`max` become packed SIMD instructions), compiled for the target's baseline
//! and again for AVX2, chosen at run time ([`isa`]). float16 and bfloat16 are widened to
//! float32 in blocks that fit the L1 cache, combined there, and rounded back once, with the
//! `half` crate's slice conversions (the approach of NCCL's and Gloo's half kernels).
//! Integer sums and products wrap, as in NCCL. `Avg` combines as `Sum`; [`scale_div`]
//! applies the final division. `PreMulSum` combines as `Sum` of inputs that [`scale_mul`]
//! multiplied by each rank's factor first. The bitwise operators apply to integer types
//! only; the kernels refuse them on float types.

mod isa;
mod kernels;

pub use isa::isa_setting_is_valid;
pub use kernels::{factor_as_int, reduce_in_place, reduce_into, scale_div, scale_mul};

#[cfg(test)]
mod tests;
