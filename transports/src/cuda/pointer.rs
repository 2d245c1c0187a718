//! Where a caller's pointer points: host memory or a CUDA device's, from the driver's pointer
//! attributes (`cuPointerGetAttribute` with `CU_POINTER_ATTRIBUTE_MEMORY_TYPE` and
//! `CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL`; CUDA Driver API, "Unified Addressing"), as
//! front ends that take raw pointers (the C ABI) need to know.
//!
//! Without a driver, or when the driver cannot initialise (no GPU), every pointer is host
//! memory: nothing else can exist. A pointer the driver does not know (ordinary host memory,
//! for which it answers `CUDA_ERROR_INVALID_VALUE`) is host memory; so is pinned host memory
//! (`CU_MEMORYTYPE_HOST`), which the host can read directly.

use super::driver;
use cudarc::driver::{result, sys};
use dmsc_core::engine::MemKind;
use std::ffi::c_void;
use std::sync::OnceLock;

/// The device number of device memory whose device the driver did not name.
pub const UNKNOWN_DEVICE: u32 = u32::MAX;

/// Whether the driver is present and initialised (`cuInit`), checked once.
fn driver_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| driver::driver_present() && result::init().is_ok())
}

/// The memory `ptr` points into.
pub fn memory_kind(ptr: *const u8) -> MemKind {
    if ptr.is_null() || !driver_ready() {
        return MemKind::Host;
    }
    let attr = |a: sys::CUpointer_attribute| -> Option<u32> {
        let mut v: u32 = 0;
        // SAFETY: both attributes are 32-bit values written to `v`; the driver only inspects
        // the address, which need not be valid memory of any kind.
        unsafe { sys::cuPointerGetAttribute(&mut v as *mut u32 as *mut c_void, a, ptr as u64) }
            .result()
            .ok()
            .map(|()| v)
    };
    use sys::CUpointer_attribute::*;
    match attr(CU_POINTER_ATTRIBUTE_MEMORY_TYPE) {
        Some(t) if t == sys::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32 => {
            match attr(CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL) {
                Some(device) => MemKind::Cuda { device },
                // Device memory whose ordinal the driver does not give: still not host
                // memory. UNKNOWN_DEVICE names no real device, so no call on it can run.
                None => MemKind::Cuda {
                    device: UNKNOWN_DEVICE,
                },
            }
        }
        _ => MemKind::Host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_is_host_memory_with_or_without_a_driver() {
        let v = [0u8; 64];
        assert_eq!(memory_kind(v.as_ptr()), MemKind::Host);
        assert_eq!(memory_kind(std::ptr::null()), MemKind::Host);
    }
}
