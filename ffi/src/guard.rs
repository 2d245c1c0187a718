//! The boundary every exported function goes through: its body runs inside
//! `std::panic::catch_unwind` (a panic becomes `dmscInternalError` carrying the panic
//! message, never an abort of the host process), and its error becomes a result code plus
//! the thread's last-error message, prefixed with the function's name.

use crate::last_error;
use crate::result::{code_of, dmscResult_t};
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A failed call: the code to return and the sentence for `dmscGetLastError`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FfiError {
    pub code: dmscResult_t,
    pub msg: String,
}

/// Result of the body of an exported function.
pub(crate) type Res<T> = Result<T, FfiError>;

impl FfiError {
    /// `dmscInvalidArgument` from function `f`.
    pub fn invalid(f: &str, what: impl Display) -> FfiError {
        FfiError {
            code: dmscResult_t::dmscInvalidArgument,
            msg: format!("{f}: {what}"),
        }
    }

    /// `dmscInvalidUsage` from function `f`.
    pub fn usage(f: &str, what: impl Display) -> FfiError {
        FfiError {
            code: dmscResult_t::dmscInvalidUsage,
            msg: format!("{f}: {what}"),
        }
    }

    /// A dmsc error raised in function `f`. An argument error reads like the C layer's own
    /// (`f: what`): its code already says it is one.
    pub fn dmsc(f: &str, e: &dmsc_rs::Error) -> FfiError {
        let msg = match e {
            dmsc_rs::Error::InvalidArgument { what } => format!("{f}: {what}"),
            e => format!("{f}: {e}"),
        };
        FfiError {
            code: code_of(e),
            msg,
        }
    }
}

/// Attach the calling function's name to a dmsc result.
pub(crate) trait Ctx<T> {
    /// Map a dmsc error to an [`FfiError`] of function `f`.
    fn ctx(self, f: &str) -> Res<T>;
}

impl<T> Ctx<T> for dmsc_rs::Result<T> {
    fn ctx(self, f: &str) -> Res<T> {
        self.map_err(|e| FfiError::dmsc(f, &e))
    }
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Run the body of exported function `f`: success is `dmscSuccess`; an error sets the
/// thread's last error and returns its code; a panic is caught and reported as
/// `dmscInternalError`.
pub(crate) fn guard(f: &str, body: impl FnOnce() -> Res<()>) -> dmscResult_t {
    let err = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return dmscResult_t::dmscSuccess,
        Ok(Err(e)) => e,
        Err(p) => FfiError {
            code: dmscResult_t::dmscInternalError,
            msg: format!(
                "{f}: internal error (a dmsc bug): panic: {}",
                panic_text(p.as_ref())
            ),
        },
    };
    last_error::set(&err.msg);
    err.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_set_the_last_error_and_return_their_code() {
        let r = guard("dmscX", || {
            Err(FfiError::invalid("dmscX", "sendbuff is NULL"))
        });
        assert_eq!(r, dmscResult_t::dmscInvalidArgument);
        assert_eq!(last_error::get(), "dmscX: sendbuff is NULL");
        assert_eq!(guard("dmscX", || Ok(())), dmscResult_t::dmscSuccess);
        assert_eq!(
            last_error::get(),
            "dmscX: sendbuff is NULL",
            "success keeps it"
        );
        let e: dmsc_rs::Result<()> = Err(dmsc_rs::Error::usage("late"));
        assert_eq!(
            guard("dmscY", || e.ctx("dmscY")),
            dmscResult_t::dmscInvalidUsage
        );
        assert_eq!(last_error::get(), "dmscY: invalid usage: late");
    }

    #[test]
    fn panics_become_internal_errors() {
        let r = guard("dmscZ", || panic!("boom {}", 7));
        assert_eq!(r, dmscResult_t::dmscInternalError);
        let m = last_error::get();
        assert!(
            m.starts_with("dmscZ: internal error") && m.ends_with("boom 7"),
            "{m}"
        );
    }
}
