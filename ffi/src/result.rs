//! Result codes: `dmscResult_t`, returned by every call.
//!
//! The codes NCCL has keep NCCL's values (`ncclResult_t` in NCCL's `nccl.h`: ncclSuccess 0,
//! ncclUnhandledCudaError 1, ncclSystemError 2, ncclInternalError 3, ncclInvalidArgument 4,
//! ncclInvalidUsage 5, ncclRemoteError 6, ncclInProgress 7); dmsc's own codes start at 16.
//! Every variant of `dmsc::Error` maps to one code ([`code_of`]).

use dmsc_rs::Error;
use std::ffi::{c_char, c_int, CStr};

/// The result of a dmsc call. Every function of the API returns one; on anything but
/// `dmscSuccess`, `dmscGetLastError` gives a sentence naming the cause.
///
/// Values shared with NCCL's `ncclResult_t` keep NCCL's numbers; 1
/// (`ncclUnhandledCudaError`) is reserved for the CUDA transport. dmsc's own codes start at 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dmscResult_t {
    /// The call succeeded.
    dmscSuccess = 0,
    /// A system call failed (sockets, io_uring, name resolution); the message gives the
    /// operation and the OS error.
    dmscSystemError = 2,
    /// A bug in dmsc: an invariant did not hold, or a panic was caught at the API boundary.
    dmscInternalError = 3,
    /// An argument is invalid: a NULL pointer, an unknown data type or reduction operator, a
    /// count that overflows, a rank, root or peer out of range, overlapping buffers, a
    /// non-NULL stream, a bad config. The message names the argument.
    dmscInvalidArgument = 4,
    /// The call is not valid now: a destroyed or unknown handle, `dmscGroupEnd` without
    /// `dmscGroupStart`, a non-blocking call inside a group.
    dmscInvalidUsage = 5,
    /// Another rank failed and reported its error, which the message carries.
    dmscRemoteError = 6,
    /// Reserved, as NCCL's `ncclInProgress` (non-blocking communicator creation); not
    /// returned by this version: non-blocking operations report progress through
    /// `dmscTest`.
    dmscInProgress = 7,
    /// A deadline passed (`DMSC_TIMEOUT`, or the config's `timeoutMs`). The message names the
    /// ranks that did not arrive and where the others were.
    dmscTimeout = 16,
    /// A peer went away: its connection closed or was reset.
    dmscPeerLost = 17,
    /// Ranks called different operations, or the same one with different arguments (count,
    /// type, operator, root); the message names the ranks and the difference.
    dmscMismatch = 18,
    /// The communicator was aborted (`dmscCommAbort`, here or on another rank).
    dmscAborted = 19,
    /// Malformed bytes arrived on the wire or from the rendezvous store.
    dmscProtocolError = 20,
}

/// An integer that holds a `dmscResult_t` value when it crosses the API into dmsc (the
/// header declares it as `dmscResult_t`); decoded with [`result_from_raw`], so an
/// out-of-range value from C is never an invalid Rust enum.
pub type RawResult = c_int;

/// Every result code, for lookups by value.
pub(crate) const ALL_RESULTS: [dmscResult_t; 12] = [
    dmscResult_t::dmscSuccess,
    dmscResult_t::dmscSystemError,
    dmscResult_t::dmscInternalError,
    dmscResult_t::dmscInvalidArgument,
    dmscResult_t::dmscInvalidUsage,
    dmscResult_t::dmscRemoteError,
    dmscResult_t::dmscInProgress,
    dmscResult_t::dmscTimeout,
    dmscResult_t::dmscPeerLost,
    dmscResult_t::dmscMismatch,
    dmscResult_t::dmscAborted,
    dmscResult_t::dmscProtocolError,
];

/// The result code with numeric value `raw`, if there is one.
pub(crate) fn result_from_raw(raw: RawResult) -> Option<dmscResult_t> {
    ALL_RESULTS.into_iter().find(|&r| r as RawResult == raw)
}

/// The result code of a dmsc error.
pub(crate) fn code_of(e: &Error) -> dmscResult_t {
    use dmscResult_t::*;
    match e {
        Error::InvalidArgument { .. } => dmscInvalidArgument,
        Error::InvalidUsage { .. } => dmscInvalidUsage,
        Error::Timeout { .. } => dmscTimeout,
        Error::Mismatch { .. } => dmscMismatch,
        Error::PeerLost { .. } => dmscPeerLost,
        Error::Remote { .. } => dmscRemoteError,
        Error::Aborted { .. } => dmscAborted,
        Error::System { .. } => dmscSystemError,
        Error::Protocol { .. } => dmscProtocolError,
        Error::Internal { .. } => dmscInternalError,
        // dmsc::Error is non-exhaustive: a variant added later is a bug here until mapped.
        _ => dmscInternalError,
    }
}

/// The fixed description of a result code.
pub(crate) fn describe(r: dmscResult_t) -> &'static CStr {
    use dmscResult_t::*;
    match r {
        dmscSuccess => c"no error",
        dmscSystemError => c"system error (a system call failed)",
        dmscInternalError => c"internal error (a dmsc bug)",
        dmscInvalidArgument => c"invalid argument",
        dmscInvalidUsage => c"invalid usage",
        dmscRemoteError => c"remote error (reported by another rank)",
        dmscInProgress => c"operation in progress",
        dmscTimeout => c"timeout (a deadline passed)",
        dmscPeerLost => c"peer lost (a connection closed or was reset)",
        dmscMismatch => c"mismatch (ranks called different operations or arguments)",
        dmscAborted => c"aborted",
        dmscProtocolError => c"protocol error (malformed data on the wire)",
    }
}

/// A fixed description of `result` (like `ncclGetErrorString`), for every value including
/// unknown ones ("unknown dmscResult_t value"). The string is static: never free it. For
/// the cause of a failed call, use `dmscGetLastError` instead.
///
/// Errors: none (it returns a string, not a result).
/// Thread safety: callable from any thread at any time.
#[no_mangle]
pub extern "C" fn dmscGetErrorString(result: RawResult) -> *const c_char {
    std::panic::catch_unwind(|| match result_from_raw(result) {
        Some(r) => describe(r).as_ptr(),
        None => c"unknown dmscResult_t value".as_ptr(),
    })
    .unwrap_or(c"dmscGetErrorString: internal error".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::dmscResult_t::*;
    use super::*;

    #[test]
    fn nccl_values_are_kept() {
        assert_eq!(dmscSuccess as i32, 0);
        assert_eq!(dmscSystemError as i32, 2);
        assert_eq!(dmscInternalError as i32, 3);
        assert_eq!(dmscInvalidArgument as i32, 4);
        assert_eq!(dmscInvalidUsage as i32, 5);
        assert_eq!(dmscRemoteError as i32, 6);
        assert_eq!(dmscInProgress as i32, 7);
        for r in ALL_RESULTS.into_iter().skip(7) {
            assert!(r as i32 >= 16, "{r:?} is a dmsc code, numbered from 16");
        }
    }

    #[test]
    fn raw_values_round_trip_and_unknown_ones_are_none() {
        for r in ALL_RESULTS {
            assert_eq!(result_from_raw(r as RawResult), Some(r));
            assert!(!describe(r).to_bytes().is_empty());
        }
        for bad in [-1, 1, 8, 15, 21, 99, i32::MIN] {
            assert_eq!(result_from_raw(bad), None);
        }
        // SAFETY: dmscGetErrorString returns a pointer to a static NUL-terminated string.
        let s = unsafe { CStr::from_ptr(dmscGetErrorString(1234)) };
        assert_eq!(s.to_str().unwrap(), "unknown dmscResult_t value");
    }

    #[test]
    fn every_error_variant_has_its_code() {
        let cases = [
            (Error::invalid("x"), dmscInvalidArgument),
            (Error::usage("x"), dmscInvalidUsage),
            (
                Error::Timeout {
                    op: "x".into(),
                    waited_s: 1.0,
                    missing: vec![1],
                    detail: String::new(),
                },
                dmscTimeout,
            ),
            (
                Error::Mismatch {
                    seq: 1,
                    ranks: vec![0, 1],
                    detail: "x".into(),
                },
                dmscMismatch,
            ),
            (
                Error::PeerLost {
                    peer: 1,
                    detail: "x".into(),
                },
                dmscPeerLost,
            ),
            (
                Error::Remote {
                    from: 1,
                    detail: "x".into(),
                },
                dmscRemoteError,
            ),
            (Error::Aborted { detail: "x".into() }, dmscAborted),
            (Error::errno("x", 5), dmscSystemError),
            (Error::protocol("x"), dmscProtocolError),
            (Error::internal("x"), dmscInternalError),
        ];
        for (e, want) in cases {
            assert_eq!(code_of(&e), want, "{}", e.kind_name());
        }
    }
}
