//! Data types (`dmscDataType_t`) and reduction operators (`dmscRedOp_t`) with NCCL's
//! numbering (`ncclDataType_t`, `ncclRedOp_t` in NCCL's `nccl.h`), which differs from dmsc's
//! internal codes; the tables here are the only place the two meet.
//!
//! C passes enums as `int`. The functions take them as integers ([`RawDataType`],
//! [`RawRedOp`], declared with the enum types in the header) and decode them here, so an
//! unknown value such as 99 is a `dmscInvalidArgument`, never an invalid Rust enum.

use crate::guard::{FfiError, Res};
use dmsc_rs::{DataType, ReduceOp};
use std::ffi::c_int;

/// Element type of a buffer (NCCL's `ncclDataType_t`, same values). `dmscFloat16` is IEEE
/// 754 binary16 and `dmscBfloat16` the upper half of a binary32; both are passed as their
/// 16-bit patterns (e.g. `uint16_t`). The header also defines NCCL's aliases `dmscChar`,
/// `dmscInt`, `dmscHalf`, `dmscFloat` and `dmscDouble`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dmscDataType_t {
    /// `int8_t`.
    dmscInt8 = 0,
    /// `uint8_t`.
    dmscUint8 = 1,
    /// `int32_t`.
    dmscInt32 = 2,
    /// `uint32_t`.
    dmscUint32 = 3,
    /// `int64_t`.
    dmscInt64 = 4,
    /// `uint64_t`.
    dmscUint64 = 5,
    /// IEEE 754 binary16 (2 bytes).
    dmscFloat16 = 6,
    /// `float` (IEEE 754 binary32).
    dmscFloat32 = 7,
    /// `double` (IEEE 754 binary64).
    dmscFloat64 = 8,
    /// bfloat16: the upper 16 bits of a binary32 (2 bytes).
    dmscBfloat16 = 9,
}

/// Reduction operator (NCCL's `ncclRedOp_t`, same values). Integer sums and products wrap;
/// `dmscAvg` is the sum divided by the number of ranks (integer division for integer
/// types).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dmscRedOp_t {
    /// Sum.
    dmscSum = 0,
    /// Product.
    dmscProd = 1,
    /// Maximum.
    dmscMax = 2,
    /// Minimum.
    dmscMin = 3,
    /// Average: sum / number of ranks.
    dmscAvg = 4,
}

/// An integer holding a `dmscDataType_t` as it crosses into dmsc (declared as
/// `dmscDataType_t` in the header).
pub type RawDataType = c_int;

/// An integer holding a `dmscRedOp_t` as it crosses into dmsc (declared as `dmscRedOp_t` in
/// the header).
pub type RawRedOp = c_int;

/// C data type ↔ dmsc data type.
const TYPES: [(dmscDataType_t, DataType); 10] = [
    (dmscDataType_t::dmscInt8, DataType::Int8),
    (dmscDataType_t::dmscUint8, DataType::Uint8),
    (dmscDataType_t::dmscInt32, DataType::Int32),
    (dmscDataType_t::dmscUint32, DataType::Uint32),
    (dmscDataType_t::dmscInt64, DataType::Int64),
    (dmscDataType_t::dmscUint64, DataType::Uint64),
    (dmscDataType_t::dmscFloat16, DataType::Float16),
    (dmscDataType_t::dmscFloat32, DataType::Float32),
    (dmscDataType_t::dmscFloat64, DataType::Float64),
    (dmscDataType_t::dmscBfloat16, DataType::Bfloat16),
];

/// C operator ↔ dmsc operator.
const OPS: [(dmscRedOp_t, ReduceOp); 5] = [
    (dmscRedOp_t::dmscSum, ReduceOp::Sum),
    (dmscRedOp_t::dmscProd, ReduceOp::Prod),
    (dmscRedOp_t::dmscMax, ReduceOp::Max),
    (dmscRedOp_t::dmscMin, ReduceOp::Min),
    (dmscRedOp_t::dmscAvg, ReduceOp::Avg),
];

/// Decode the data type argument `datatype` of function `f`.
pub(crate) fn data_type(f: &str, raw: RawDataType) -> Res<DataType> {
    TYPES
        .iter()
        .find(|(c, _)| *c as c_int == raw)
        .map(|&(_, d)| d)
        .ok_or_else(|| {
            FfiError::invalid(
                f,
                format_args!(
                    "datatype {raw} is not a dmscDataType_t (dmscInt8 = 0 ... dmscBfloat16 = 9)"
                ),
            )
        })
}

/// Decode the reduction operator argument `op` of function `f`.
pub(crate) fn red_op(f: &str, raw: RawRedOp) -> Res<ReduceOp> {
    OPS.iter()
        .find(|(c, _)| *c as c_int == raw)
        .map(|&(_, o)| o)
        .ok_or_else(|| {
            FfiError::invalid(
                f,
                format_args!("op {raw} is not a dmscRedOp_t (dmscSum = 0 ... dmscAvg = 4)"),
            )
        })
}

/// The C name of a dmsc data type, for messages.
pub(crate) fn c_name(d: DataType) -> &'static str {
    match d {
        DataType::Int8 => "dmscInt8",
        DataType::Uint8 => "dmscUint8",
        DataType::Int32 => "dmscInt32",
        DataType::Uint32 => "dmscUint32",
        DataType::Int64 => "dmscInt64",
        DataType::Uint64 => "dmscUint64",
        DataType::Float16 => "dmscFloat16",
        DataType::Bfloat16 => "dmscBfloat16",
        DataType::Float32 => "dmscFloat32",
        DataType::Float64 => "dmscFloat64",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::dmscResult_t::dmscInvalidArgument;

    #[test]
    fn nccl_numbering() {
        use dmscDataType_t::*;
        let want = [
            (dmscInt8, 0),
            (dmscUint8, 1),
            (dmscInt32, 2),
            (dmscUint32, 3),
            (dmscInt64, 4),
            (dmscUint64, 5),
            (dmscFloat16, 6),
            (dmscFloat32, 7),
            (dmscFloat64, 8),
            (dmscBfloat16, 9),
        ];
        for (t, v) in want {
            assert_eq!(t as i32, v);
        }
        use dmscRedOp_t::*;
        for (o, v) in [
            (dmscSum, 0),
            (dmscProd, 1),
            (dmscMax, 2),
            (dmscMin, 3),
            (dmscAvg, 4),
        ] {
            assert_eq!(o as i32, v);
        }
    }

    #[test]
    fn every_type_and_op_maps_one_to_one() {
        for (c, d) in TYPES {
            assert_eq!(data_type("f", c as c_int).unwrap(), d);
            assert_eq!(c_name(d), format!("{c:?}"));
        }
        let mut seen: Vec<DataType> = TYPES.iter().map(|t| t.1).collect();
        seen.dedup();
        assert_eq!(seen.len(), DataType::ALL.len());
        for d in DataType::ALL {
            assert!(TYPES.iter().any(|t| t.1 == d), "{d} has no C name");
        }
        assert_eq!(data_type("f", 9).unwrap(), DataType::Bfloat16);
        assert_eq!(data_type("f", 7).unwrap(), DataType::Float32);
        for (c, o) in OPS {
            assert_eq!(red_op("f", c as c_int).unwrap(), o);
        }
        assert_eq!(red_op("f", 2).unwrap(), ReduceOp::Max);
        // NCCL's built-in operators all have C names; the bitwise ones (not in NCCL) have
        // none, and premul_sum is reached through operators created on a communicator.
        for o in ReduceOp::ALL {
            let named = OPS.iter().any(|t| t.1 == o);
            assert_eq!(named, !o.is_bitwise() && o != ReduceOp::PreMulSum, "{o}");
        }
    }

    #[test]
    fn unknown_values_name_the_argument() {
        for bad in [-1, 10, 99, i32::MAX] {
            let e = data_type("dmscAllReduce", bad).unwrap_err();
            assert_eq!(e.code, dmscInvalidArgument);
            assert!(e.msg.starts_with("dmscAllReduce: datatype"), "{}", e.msg);
        }
        for bad in [-1, 5, 99] {
            let e = red_op("dmscReduce", bad).unwrap_err();
            assert!(e.msg.starts_with("dmscReduce: op"), "{}", e.msg);
        }
    }
}
