//! The library version, as NCCL encodes it (`NCCL_VERSION(X,Y,Z)` = X*10000 + Y*100 + Z for
//! NCCL >= 2.9; `ncclGetVersion`).

use crate::guard::{guard, FfiError};
use crate::result::dmscResult_t;
use std::ffi::c_int;

/// Major version of the header (and of the ABI: libdmsc.so.0's 0).
pub const DMSC_MAJOR: c_int = 0;
/// Minor version of the header.
pub const DMSC_MINOR: c_int = 1;
/// Patch version of the header.
pub const DMSC_PATCH: c_int = 0;
/// The header's version as `DMSC_VERSION(DMSC_MAJOR, DMSC_MINOR, DMSC_PATCH)`, comparable
/// with what `dmscGetVersion` returns.
pub const DMSC_VERSION_CODE: c_int = DMSC_MAJOR * 10000 + DMSC_MINOR * 100 + DMSC_PATCH;

/// Store the library's version, `major * 10000 + minor * 100 + patch` (`DMSC_VERSION_CODE` of
/// the header it was built with), in `*version`.
///
/// Errors: `dmscInvalidArgument` if `version` is NULL.
/// Thread safety: callable from any thread at any time.
#[no_mangle]
pub unsafe extern "C" fn dmscGetVersion(version: *mut c_int) -> dmscResult_t {
    const F: &str = "dmscGetVersion";
    guard(F, || {
        if version.is_null() {
            return Err(FfiError::invalid(F, "version is NULL"));
        }
        // SAFETY: non-NULL, and the caller passes a pointer to a writable int.
        unsafe { version.write(DMSC_VERSION_CODE) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_follow_the_crate_version() {
        let v = |s: &str| s.parse::<c_int>().unwrap();
        assert_eq!(DMSC_MAJOR, v(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(DMSC_MINOR, v(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(DMSC_PATCH, v(env!("CARGO_PKG_VERSION_PATCH")));
        let mut got = 0;
        // SAFETY: a valid pointer to a local int.
        let r = unsafe { dmscGetVersion(&mut got) };
        assert_eq!((r, got), (dmscResult_t::dmscSuccess, 100));
        // SAFETY: NULL is checked before any write.
        let r = unsafe { dmscGetVersion(std::ptr::null_mut()) };
        assert_eq!(r, dmscResult_t::dmscInvalidArgument);
    }
}
