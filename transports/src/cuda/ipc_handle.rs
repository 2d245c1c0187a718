//! What one rank sends another on the same host so the peer can map its GPU buffer: a CUDA
//! IPC memory handle (`cuIpcGetMemHandle`, 64 opaque bytes naming the whole allocation), the
//! buffer's offset into that allocation, its length, and the exporting GPU's UUID, as NCCL's
//! P2P transport exchanges them over its bootstrap (NCCL's design; read, not copied). The
//! encoding ([`IpcExport::to_bytes`], [`IpcExport::from_bytes`]) is fixed-size little-endian
//! and tested here; exporting and opening ([`export`], [`ImportedBuffer::open`], `cuda`
//! feature) are compile-checked only: no GPU was available when they were written. The
//! exchange itself ([`super::ipc_memory::IpcPeers`]) is tested on the FAKE device, as are
//! the communicator's collectives over it (`dmsc`'s `device_call::ipc_call`).
//!
//! Two ranks that are threads of one process cannot open each other's handles (the driver
//! refuses a handle of its own process); they share the address space and use the pointer
//! itself. Sources: CUDA Driver API, "Interprocess communication" and "Unified Addressing".

use dmsc_core::error::{Error, Result};

/// Bytes of an encoded [`IpcExport`].
pub const ENCODED_LEN: usize = 64 + 8 + 8 + 16;

/// A GPU buffer as its owner exports it to a peer process on the same host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpcExport {
    /// `CUipcMemHandle` of the allocation holding the buffer.
    pub handle: [u8; 64],
    /// Offset of the buffer in that allocation.
    pub offset: u64,
    /// Bytes of the buffer.
    pub len: u64,
    /// UUID of the GPU the allocation is on (`cuDeviceGetUuid`), so the peer can check it
    /// sees the same device.
    pub device_uuid: [u8; 16],
}

impl IpcExport {
    /// The fixed-size encoding.
    pub fn to_bytes(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..64].copy_from_slice(&self.handle);
        out[64..72].copy_from_slice(&self.offset.to_le_bytes());
        out[72..80].copy_from_slice(&self.len.to_le_bytes());
        out[80..].copy_from_slice(&self.device_uuid);
        out
    }

    /// Decode; errors on a wrong length or a range that overflows.
    pub fn from_bytes(b: &[u8]) -> Result<IpcExport> {
        if b.len() != ENCODED_LEN {
            return Err(Error::protocol(format!(
                "a CUDA IPC export has {ENCODED_LEN} bytes, not {}",
                b.len()
            )));
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let e = IpcExport {
            handle: b[..64].try_into().expect("64 bytes"),
            offset: word(64),
            len: word(72),
            device_uuid: b[80..].try_into().expect("16 bytes"),
        };
        if e.offset.checked_add(e.len).is_none() {
            return Err(Error::protocol(format!(
                "a CUDA IPC export of {} bytes at offset {} overflows",
                e.len, e.offset
            )));
        }
        Ok(e)
    }
}

#[cfg(feature = "cuda")]
pub use driver_side::{export, ImportedBuffer};

#[cfg(feature = "cuda")]
mod driver_side {
    use super::IpcExport;
    use crate::cuda::driver;
    use cudarc::driver::sys;
    use dmsc_core::error::{Error, Result};
    use std::ffi::c_void;

    /// Export `len` bytes of device memory at `ptr` (in the current context).
    pub fn export(ptr: u64, len: u64, device: sys::CUdevice) -> Result<IpcExport> {
        let mut base: u64 = 0;
        // SAFETY: RANGE_START_ADDR writes a CUdeviceptr (u64) to `base`; the driver only
        // looks the address up.
        unsafe {
            sys::cuPointerGetAttribute(
                &mut base as *mut u64 as *mut c_void,
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                ptr,
            )
        }
        .result()
        .map_err(|e| driver::error(format!("cuPointerGetAttribute({ptr:#x})"), e))?;
        let mut handle = sys::CUipcMemHandle { reserved: [0; 64] };
        // SAFETY: `base` is the start of a live allocation (the driver just said so).
        unsafe { sys::cuIpcGetMemHandle(&mut handle, base) }
            .result()
            .map_err(|e| driver::error("cuIpcGetMemHandle", e))?;
        let uuid = cudarc::driver::result::device::get_uuid(device)
            .map_err(|e| driver::error("cuDeviceGetUuid", e))?;
        Ok(IpcExport {
            handle: handle.reserved.map(|c| c as u8),
            offset: ptr - base,
            len,
            device_uuid: uuid.bytes.map(|c| c as u8),
        })
    }

    /// A peer's buffer mapped into this process; unmapped when dropped.
    #[derive(Debug)]
    pub struct ImportedBuffer {
        base: u64,
        /// The peer's buffer in this process's address space.
        pub ptr: u64,
        /// Its length.
        pub len: u64,
    }

    impl ImportedBuffer {
        /// Map the peer's export (in the current context, which must be on the GPU the
        /// export names; `device` is that GPU here).
        pub fn open(e: &IpcExport, device: sys::CUdevice) -> Result<ImportedBuffer> {
            let uuid = cudarc::driver::result::device::get_uuid(device)
                .map_err(|err| driver::error("cuDeviceGetUuid", err))?;
            if uuid.bytes.map(|c| c as u8) != e.device_uuid {
                return Err(Error::usage(
                    "a peer's CUDA IPC buffer is on another GPU than this rank's; \
                     peer access between GPUs is not supported yet",
                ));
            }
            let handle = sys::CUipcMemHandle {
                reserved: e.handle.map(|b| b as _),
            };
            let mut base: u64 = 0;
            let flags = sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32;
            // SAFETY: a handle from a peer's cuIpcGetMemHandle; the mapping is closed in Drop.
            unsafe { sys::cuIpcOpenMemHandle_v2(&mut base, handle, flags) }
                .result()
                .map_err(|err| driver::error("cuIpcOpenMemHandle", err))?;
            Ok(ImportedBuffer {
                base,
                ptr: base + e.offset,
                len: e.len,
            })
        }
    }

    impl Drop for ImportedBuffer {
        fn drop(&mut self) {
            // SAFETY: `base` came from cuIpcOpenMemHandle and is closed once, here.
            let _ = unsafe { sys::cuIpcCloseMemHandle(self.base) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_round_trip_and_bad_ones_are_refused() {
        let mut handle = [0u8; 64];
        for (i, b) in handle.iter_mut().enumerate() {
            *b = i as u8 ^ 0xa5;
        }
        let e = IpcExport {
            handle,
            offset: 4096,
            len: 1 << 30,
            device_uuid: [7; 16],
        };
        let bytes = e.to_bytes();
        assert_eq!(IpcExport::from_bytes(&bytes).unwrap(), e);
        let err = IpcExport::from_bytes(&bytes[..95]).unwrap_err().to_string();
        assert!(err.contains("96 bytes, not 95"), "{err}");
        let mut over = bytes;
        over[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(IpcExport::from_bytes(&over).is_err());
    }
}
