//! The CUDA C source of dmsc's device kernels ([`SOURCE`], `kernels.cu`) and the names of
//! its entry points for each data type and operator.
//!
//! The source is compiled at run time with NVRTC (`nvrtc.rs`, `cuda` feature), and in the
//! tests as host C++ against a shim of the CUDA built-ins (`host_check.rs`), whose results
//! are compared with dmsc-core's host kernels. The kernels and their semantics are
//! documented in the source itself. The split of a reduction into an element-wise combiner
//! and a final scaling follows NCCL's device reduction functions (src/device/reduce_kernel.h
//! in NCCL, read for design only).

use dmsc_core::error::{Error, Result};
use dmsc_core::{DataType, ReduceOp};

/// The CUDA C source of every kernel (no `#include`s; see its header comment).
pub const SOURCE: &str = include_str!("kernels.cu");

/// The CRC32C kernel: `dmsc_crc32c_chunks(src, n, chunk, out)` writes the CRC32C of each
/// `chunk`-byte piece of `src` to `out`, for the host to combine.
pub const CRC32C_CHUNKS: &str = "dmsc_crc32c_chunks";

/// The suffix of a data type in kernel names (`i8`, `u8`, `i32`, `u32`, `i64`, `u64`, `f16`,
/// `bf16`, `f32`, `f64`).
pub const fn type_suffix(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Int8 => "i8",
        DataType::Uint8 => "u8",
        DataType::Int32 => "i32",
        DataType::Uint32 => "u32",
        DataType::Int64 => "i64",
        DataType::Uint64 => "u64",
        DataType::Float16 => "f16",
        DataType::Bfloat16 => "bf16",
        DataType::Float32 => "f32",
        DataType::Float64 => "f64",
    }
}

/// The kernel `dmsc_reduce_<op>_<type>(dst, a, b, n)` computing `dst[i] = a[i] ⊕ b[i]` over
/// `n` elements, for the operator that combines `op` ([`ReduceOp::combiner`]: `avg` and
/// `premul_sum` combine as `sum`). `None` for a bitwise operator on a float type, which has
/// no kernel ([`ReduceOp::check_dtype`] refuses it).
pub fn reduce_kernel(dtype: DataType, op: ReduceOp) -> Option<String> {
    let op = op.combiner();
    if op.check_dtype(dtype).is_err() {
        return None;
    }
    Some(format!("dmsc_reduce_{}_{}", op.name(), type_suffix(dtype)))
}

/// The kernel `dmsc_scale_div_<type>(dst, n, divisor)`: `dst[i] /= divisor` (an average's
/// last step).
pub fn scale_div_kernel(dtype: DataType) -> String {
    format!("dmsc_scale_div_{}", type_suffix(dtype))
}

/// The kernel `dmsc_scale_mul_<type>(dst, src, n, factor, whole)`: `dst[i] = src[i] * factor`
/// for float types, `src[i] * whole` (wrapping) for integer types (a premul_sum's first
/// step; `whole` comes from [`dmsc_core::reduce::factor_as_int`]).
pub fn scale_mul_kernel(dtype: DataType) -> String {
    format!("dmsc_scale_mul_{}", type_suffix(dtype))
}

/// Every kernel the source defines, in a fixed order: each reduction, then each scaling,
/// then the CRC.
pub fn all_kernels() -> Vec<String> {
    let mut names = Vec::new();
    for dtype in DataType::ALL {
        for op in ReduceOp::ALL {
            if let Some(k) = reduce_kernel(dtype, op) {
                if !names.contains(&k) {
                    names.push(k);
                }
            }
        }
    }
    for dtype in DataType::ALL {
        names.push(scale_div_kernel(dtype));
        names.push(scale_mul_kernel(dtype));
    }
    names.push(CRC32C_CHUNKS.to_string());
    names
}

/// The element count of `n` bytes of `dtype` for a kernel launch, or an error when `n` is not
/// whole elements.
pub fn elements(dtype: DataType, n: usize) -> Result<u64> {
    if !n.is_multiple_of(dtype.size()) {
        return Err(Error::invalid(format!(
            "{n} bytes is not a whole number of {dtype} elements"
        )));
    }
    Ok((n / dtype.size()) as u64)
}

/// The error of an average (`scale_div`) over 0 ranks.
pub fn zero_divisor() -> Error {
    Error::invalid("average over 0 ranks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_cover_every_type_and_combiner() {
        let names = all_kernels();
        // 6 integer types × 7 combiners, 4 float types × 4, two scalings each, one CRC.
        assert_eq!(names.len(), 6 * 7 + 4 * 4 + 10 * 2 + 1);
        // host_check.rs looks each one up in a host build of the source.
        assert_eq!(reduce_kernel(DataType::Float16, ReduceOp::BXor), None);
        assert_eq!(
            reduce_kernel(DataType::Bfloat16, ReduceOp::Avg).as_deref(),
            Some("dmsc_reduce_sum_bf16")
        );
    }
}
