//! Reduction operators created by the caller (`ncclRedOpCreatePreMulSum` and
//! `ncclRedOpDestroy` in NCCL's `nccl.h`, NCCL 2.11 and later): a sum of each rank's input
//! multiplied by that rank's own scalar.
//!
//! As in NCCL, an operator belongs to the communicator it was created on, its value is
//! `dmscNumOps` (5) or more, and its data type is fixed at creation. The scalar is read when
//! the operator is created (`dmscScalarHostImmediate`) or at each call that uses it
//! (`dmscScalarDevice`: the pointer is kept, and, the communicator's memory being host
//! memory, read on the host at the call).

use crate::args::out;
use crate::guard::{guard, FfiError, Res};
use crate::handle::dmscComm_t;
use crate::result::dmscResult_t;
use crate::types::{c_name, data_type, red_op, RawDataType, RawRedOp};
use dmsc_rs::{Communicator, DataType, ReduceOp};
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Where the scalar of `dmscRedOpCreatePreMulSum` lives (NCCL's `ncclScalarResidence_t`,
/// same values).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dmscScalarResidence_t {
    /// The scalar stays at its address and is read at each operation that uses the
    /// operator (the address must stay valid until `dmscRedOpDestroy`).
    dmscScalarDevice = 0,
    /// The scalar is read once, by `dmscRedOpCreatePreMulSum`.
    dmscScalarHostImmediate = 1,
}

/// An integer holding a `dmscScalarResidence_t` (declared as one in the header).
pub type RawResidence = c_int;

/// The first value given to a created operator (NCCL's `ncclNumOps`).
const FIRST: c_int = 5;

/// A created operator's scalar.
#[derive(Clone, Copy, Debug)]
enum Scalar {
    /// Read at creation.
    Value(f64),
    /// Read at each use, from this address.
    At(usize),
}

/// A created operator.
#[derive(Clone, Debug)]
struct Created {
    dtype: DataType,
    scalar: Scalar,
    /// Keeps the communicator's allocation (not the communicator) alive for as long as the
    /// entry exists, so that no later communicator can have its address, the table's key.
    _pin: Weak<Communicator>,
}

/// Created operators by (communicator address, operator value). An entry's `_pin` keeps the
/// address from being reused; entries go with their communicator ([`forget_comm`]).
type Table = HashMap<(usize, c_int), Created>;

static OPS: Mutex<Option<Table>> = Mutex::new(None);

fn table() -> MutexGuard<'static, Option<Table>> {
    OPS.lock().unwrap_or_else(|p| p.into_inner())
}

fn key_of(comm: &Communicator) -> usize {
    comm as *const Communicator as usize
}

/// The largest integer magnitude a factor may have: every integer up to it is an exact f64.
const EXACT: u64 = 1 << 53;

/// Read one scalar of `dtype` at `p` as an f64 (for function `f`'s errors). 64-bit integers
/// beyond 2^53 are refused: they would not survive the trip through an f64 exactly.
///
/// # Safety
/// `p` is valid for reads of one `dtype` element (no alignment needed).
unsafe fn read_scalar(f: &str, dtype: DataType, p: *const c_void) -> Res<f64> {
    let too_big = |v: &dyn std::fmt::Display| {
        FfiError::invalid(
            f,
            format_args!("scalar {v} is beyond 2^53, the largest integer factor dmsc keeps exact"),
        )
    };
    // SAFETY: the caller's contract; unaligned reads.
    Ok(unsafe {
        match dtype {
            DataType::Int64 => {
                let v = (p as *const i64).read_unaligned();
                if v.unsigned_abs() > EXACT {
                    return Err(too_big(&v));
                }
                v as f64
            }
            DataType::Uint64 => {
                let v = (p as *const u64).read_unaligned();
                if v > EXACT {
                    return Err(too_big(&v));
                }
                v as f64
            }
            DataType::Int8 => (p as *const i8).read_unaligned() as f64,
            DataType::Uint8 => (p as *const u8).read_unaligned() as f64,
            DataType::Int32 => (p as *const i32).read_unaligned() as f64,
            DataType::Uint32 => (p as *const u32).read_unaligned() as f64,
            DataType::Float16 => half::f16::from_bits((p as *const u16).read_unaligned()).to_f64(),
            DataType::Bfloat16 => {
                half::bf16::from_bits((p as *const u16).read_unaligned()).to_f64()
            }
            DataType::Float32 => (p as *const f32).read_unaligned() as f64,
            DataType::Float64 => (p as *const f64).read_unaligned(),
        }
    })
}

/// The operator argument `op` of function `f` on `comm` for a call on `dtype` elements: a
/// built-in operator, or one created on `comm` (then `PreMulSum` with this rank's factor).
pub(crate) fn resolve(
    f: &str,
    comm: &Communicator,
    raw: RawRedOp,
    dtype: DataType,
) -> Res<(ReduceOp, Option<f64>)> {
    if raw < FIRST {
        return Ok((red_op(f, raw)?, None));
    }
    let Some(op) = table()
        .as_ref()
        .and_then(|t| t.get(&(key_of(comm), raw)).cloned())
    else {
        return Err(FfiError::invalid(
            f,
            format_args!(
                "op {raw} is neither a dmscRedOp_t (dmscSum = 0 ... dmscAvg = 4) nor an \
                 operator created on this communicator by dmscRedOpCreatePreMulSum"
            ),
        ));
    };
    if op.dtype != dtype {
        return Err(FfiError::invalid(
            f,
            format_args!(
                "op {raw} was created for {} but the call's datatype is {}",
                c_name(op.dtype),
                c_name(dtype)
            ),
        ));
    }
    let factor = match op.scalar {
        Scalar::Value(v) => v,
        // SAFETY: dmscRedOpCreatePreMulSum's contract: a dmscScalarDevice scalar stays valid
        // until the operator is destroyed.
        Scalar::At(p) => unsafe { read_scalar(f, dtype, p as *const c_void)? },
    };
    Ok((ReduceOp::PreMulSum, Some(factor)))
}

/// Forget the operators created on `comm` (it is being destroyed).
pub(crate) fn forget_comm(comm: &Communicator) {
    if let Some(t) = table().as_mut() {
        let k = key_of(comm);
        t.retain(|(c, _), _| *c != k);
    }
}

/// Create a pre-multiplied sum (`ncclRedOpCreatePreMulSum`): a reduction operator for
/// `comm` that sums every rank's input multiplied by that rank's `*scalar`, a value of
/// `datatype` (ranks may pass different scalars). The new operator's value (5 or more) is
/// stored in `*op`; use it as the `op` of dmscAllReduce, dmscReduce and dmscReduceScatter
/// (and their Async forms) on `comm`, with the same `datatype`. Integer types multiply by
/// the scalar with wrapping; float16 and bfloat16 multiply in float32. The input buffers are
/// never written: the product goes to memory of the operation's own.
///
/// With `dmscScalarHostImmediate` the scalar is read now. With `dmscScalarDevice` it is read
/// by each call that uses the operator, when that call is made (for a call inside a group or
/// an Async call, when it is issued, not when it runs), so `scalar` must stay valid until
/// `dmscRedOpDestroy` (dmsc communicators use host memory: the pointer is read on the host).
/// 64-bit integer scalars must be within 2^53 in magnitude.
///
/// Errors: `dmscInvalidArgument` if `op` or `scalar` is NULL, `datatype` or `residence` is
/// unknown, or `comm` is NULL; `dmscInvalidUsage` if `comm` is not a live communicator.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscRedOpCreatePreMulSum(
    op: *mut RawRedOp,
    scalar: *mut c_void,
    datatype: RawDataType,
    residence: RawResidence,
    comm: dmscComm_t,
) -> dmscResult_t {
    const F: &str = "dmscRedOpCreatePreMulSum";
    guard(F, || {
        let op = out(F, "op", op)?;
        let scalar = out(F, "scalar", scalar)?;
        let dtype = data_type(F, datatype)?;
        let (_, c) = crate::comm::comm_arg(F, comm)?;
        let scalar = match residence {
            r if r == dmscScalarResidence_t::dmscScalarHostImmediate as c_int => {
                // SAFETY: the C contract: `scalar` points to one element of `datatype`.
                Scalar::Value(unsafe { read_scalar(F, dtype, scalar)? })
            }
            r if r == dmscScalarResidence_t::dmscScalarDevice as c_int => {
                Scalar::At(scalar as usize)
            }
            r => {
                return Err(FfiError::invalid(
                    F,
                    format_args!(
                        "residence {r} is not a dmscScalarResidence_t (dmscScalarDevice = 0, \
                         dmscScalarHostImmediate = 1)"
                    ),
                ))
            }
        };
        let mut t = table();
        let t = t.get_or_insert_with(HashMap::new);
        let k = key_of(&c);
        let value = (FIRST..c_int::MAX)
            .find(|v| !t.contains_key(&(k, *v)))
            .ok_or_else(|| FfiError::usage(F, "no operator value is left on this communicator"))?;
        let created = Created {
            dtype,
            scalar,
            _pin: Arc::downgrade(&c),
        };
        t.insert((k, value), created);
        // SAFETY: `op` is non-NULL and, by the C contract, writable.
        unsafe { op.write(value) };
        Ok(())
    })
}

/// Destroy an operator made by `dmscRedOpCreatePreMulSum` on `comm`
/// (`ncclRedOpDestroy`); its value may be given to a later operator. Operations already
/// started with it are unaffected.
///
/// Errors: `dmscInvalidArgument` if `op` is a built-in operator or was not created on
/// `comm`, or `comm` is NULL; `dmscInvalidUsage` if `comm` is not a live communicator.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn dmscRedOpDestroy(op: RawRedOp, comm: dmscComm_t) -> dmscResult_t {
    const F: &str = "dmscRedOpDestroy";
    guard(F, || {
        let (_, c) = crate::comm::comm_arg(F, comm)?;
        let removed = table()
            .as_mut()
            .and_then(|t| t.remove(&(key_of(&c), op)))
            .is_some();
        if !removed {
            return Err(FfiError::invalid(
                F,
                format_args!(
                    "op {op} was not created on this communicator by dmscRedOpCreatePreMulSum \
                     (or was destroyed already)"
                ),
            ));
        }
        Ok(())
    })
}
