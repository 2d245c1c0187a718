//! Which CUDA device a pointer handed over as device memory belongs to, for front ends that
//! are told "this is CUDA memory" but not on which device (`__cuda_array_interface__`):
//! the driver's pointer attributes (`cuPointerGetAttribute`, CUDA Driver API reference,
//! "Unified Addressing"), through `dmsc_transports::cuda::pointer` with the `cuda` feature.

use dmsc_core::{Error, Result};

/// The CUDA device ordinal of device memory at `ptr`; `what` names it in errors. Errors when
/// dmsc was built without its `cuda` feature, when the CUDA driver cannot be loaded, or when
/// the driver says `ptr` is not device memory.
pub fn cuda_device_of(what: &str, ptr: *const u8) -> Result<u32> {
    imp(what, ptr)
}

#[cfg(feature = "cuda")]
fn imp(what: &str, ptr: *const u8) -> Result<u32> {
    use dmsc_core::engine::MemKind;
    use dmsc_transports::cuda::{driver, pointer};
    if !driver::driver_present() {
        return Err(driver::no_driver(&format!("{what}, CUDA device memory,")));
    }
    match pointer::memory_kind(ptr) {
        MemKind::Cuda { device } if device != pointer::UNKNOWN_DEVICE => Ok(device),
        MemKind::Cuda { .. } => Err(Error::invalid(format!(
            "{what} is CUDA device memory, but the driver does not say of which device"
        ))),
        MemKind::Host => Err(Error::invalid(format!(
            "{what} claims to be CUDA device memory, but the CUDA driver does not know address \
             {ptr:p} as device memory"
        ))),
    }
}

#[cfg(not(feature = "cuda"))]
fn imp(what: &str, _ptr: *const u8) -> Result<u32> {
    Err(Error::usage(format!(
        "{what} is CUDA device memory, but dmsc was built without its `cuda` feature"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_is_not_taken_for_device_memory() {
        let v = [0u8; 16];
        let e = cuda_device_of("tensor", v.as_ptr())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid") || e.contains("tensor"), "{e}");
        assert!(e.contains("tensor") && e.contains("CUDA"), "{e}");
    }
}
