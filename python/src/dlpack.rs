//! Zero-copy import of DLPack tensors (`__dlpack__` / `__dlpack_device__`, e.g. torch CPU
//! tensors, numpy arrays, JAX arrays).
//!
//! The structures follow `dlpack.h` (v1.1). The versioned form (`dltensor_versioned`
//! capsules, asked for with `max_version=(1, 0)`) is preferred because it carries a read-only
//! flag; producers that do not understand `max_version` are asked again for the legacy
//! `dltensor` capsule. As the protocol requires, the capsule is renamed to `used_*` once
//! consumed, and [`DlGuard`] calls the producer's deleter when dmsc is done with the memory.
//! CPU and CUDA (`kDLCUDA`) tensors are taken. `__dlpack_device__` is asked first, so a CUDA
//! tensor is exported with `__dlpack__(stream=...)` for its current stream (torch's or CuPy's
//! current stream of its device, else the legacy default stream), as the protocol asks of a
//! consumer: the producer orders its pending work on the tensor before that stream, and
//! dmsc orders its call on it. The device is checked again on the exported tensor.

use crate::errors::invalid;
use dmsc::call::MemKind;
use dmsc::DataType;
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::ffi::{c_void, CStr};

/// `DLDeviceType::kDLCPU`.
const KDL_CPU: i32 = 1;
/// `DLDeviceType::kDLCUDA`.
const KDL_CUDA: i32 = 2;
/// `DLDeviceType::kDLCUDAHost` (pinned host memory: host memory to dmsc).
const KDL_CUDA_HOST: i32 = 3;
/// `DLPACK_FLAG_BITMASK_READ_ONLY`.
const FLAG_READ_ONLY: u64 = 1;
/// `DLPACK_FLAG_BITMASK_IS_COPIED`.
const FLAG_IS_COPIED: u64 = 2;

const NAME_LEGACY: &CStr = c"dltensor";
const NAME_VERSIONED: &CStr = c"dltensor_versioned";
const USED_LEGACY: &CStr = c"used_dltensor";
const USED_VERSIONED: &CStr = c"used_dltensor_versioned";

#[repr(C)]
#[derive(Clone, Copy)]
struct DlDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DlDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DlTensor {
    data: *mut c_void,
    device: DlDevice,
    ndim: i32,
    dtype: DlDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

#[repr(C)]
struct DlManagedTensor {
    dl_tensor: DlTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensor)>,
}

#[repr(C)]
struct DlPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct DlManagedTensorVersioned {
    version: DlPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DlTensor,
}

/// Ownership of a consumed DLPack tensor: calls the producer's deleter on drop. Drop it while
/// attached to the interpreter (deleters of Python producers may touch Python objects).
pub struct DlGuard {
    managed: Managed,
}

enum Managed {
    Legacy(*mut DlManagedTensor),
    Versioned(*mut DlManagedTensorVersioned),
}

// SAFETY: the guard only holds the producer's pointer and calls its deleter once; DLPack
// deleters may be called from any thread.
unsafe impl Send for DlGuard {}
// SAFETY: no method reads through the pointer after construction.
unsafe impl Sync for DlGuard {}

impl Drop for DlGuard {
    fn drop(&mut self) {
        // SAFETY: we own the managed tensor (its capsule was renamed to `used_*`), and this
        // is the only call of its deleter.
        unsafe {
            match self.managed {
                Managed::Legacy(m) => {
                    if let Some(d) = (*m).deleter {
                        d(m)
                    }
                }
                Managed::Versioned(m) => {
                    if let Some(d) = (*m).deleter {
                        d(m)
                    }
                }
            }
        }
    }
}

/// A DLPack tensor's memory as dmsc sees it.
pub struct DlView {
    /// Start of the data (`data + byte_offset`; dangling but aligned when empty).
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
    /// Element type.
    pub dtype: DataType,
    /// Length of the first dimension (1 for a scalar).
    pub rows: usize,
    /// The producer marked the tensor read-only, or exported a copy.
    pub readonly: bool,
    /// Host memory, or a CUDA device's.
    pub kind: MemKind,
    /// For CUDA memory: the stream (raw handle) given to `__dlpack__(stream=...)`, which the
    /// producer ordered its work on the tensor before, and the call orders on.
    pub stream: usize,
    /// Ownership of the exported tensor.
    pub guard: DlGuard,
}

fn device_name(t: i32) -> &'static str {
    match t {
        1 => "cpu",
        2 => "cuda",
        3 => "cuda_host",
        4 => "opencl",
        7 => "vulkan",
        8 => "metal",
        9 => "vpi",
        10 => "rocm",
        11 => "rocm_host",
        13 => "cuda_managed",
        14 => "oneapi",
        15 => "webgpu",
        16 => "hexagon",
        17 => "maia",
        _ => "unknown",
    }
}

/// Where a DLPack tensor's memory is, for dmsc: CPU (and pinned CUDA host) memory, or a CUDA
/// device's.
fn check_device(name: &str, device_type: i32, device_id: i32) -> PyResult<MemKind> {
    match device_type {
        KDL_CPU | KDL_CUDA_HOST => Ok(MemKind::Host),
        KDL_CUDA => match u32::try_from(device_id) {
            Ok(device) => Ok(MemKind::Cuda { device }),
            Err(_) => Err(invalid(format!(
                "{name} is on CUDA device {device_id}, which is not a device ordinal"
            ))),
        },
        _ => Err(invalid(format!(
            "{name} is on device {}:{device_id} (DLPack device type {device_type}); dmsc \
             moves CPU and CUDA memory only: copy the tensor to the CPU or a CUDA device first",
            device_name(device_type)
        ))),
    }
}

/// The device of `obj` by `__dlpack_device__()`, when it has one.
fn dlpack_device(obj: &Bound<'_, PyAny>) -> PyResult<Option<(i32, i32)>> {
    let py = obj.py();
    if !obj.hasattr(pyo3::intern!(py, "__dlpack_device__"))? {
        return Ok(None);
    }
    let d = obj.call_method0(pyo3::intern!(py, "__dlpack_device__"))?;
    Ok(Some(d.extract()?))
}

/// The dmsc type of a DLPack data type.
fn dtype_of(name: &str, t: DlDataType) -> PyResult<DataType> {
    let d = match (t.code, t.bits, t.lanes) {
        (0, 8, 1) => Some(DataType::Int8),
        (0, 32, 1) => Some(DataType::Int32),
        (0, 64, 1) => Some(DataType::Int64),
        (1, 8, 1) => Some(DataType::Uint8),
        (1, 32, 1) => Some(DataType::Uint32),
        (1, 64, 1) => Some(DataType::Uint64),
        (2, 16, 1) => Some(DataType::Float16),
        (2, 32, 1) => Some(DataType::Float32),
        (2, 64, 1) => Some(DataType::Float64),
        (4, 16, 1) => Some(DataType::Bfloat16),
        _ => None,
    };
    d.ok_or_else(|| {
        let kind = match t.code {
            0 => "int",
            1 => "uint",
            2 => "float",
            4 => "bfloat",
            5 => "complex",
            6 => "bool",
            _ => "code ",
        };
        let kind = if kind == "code " {
            format!("code {}", t.code)
        } else {
            kind.to_string()
        };
        let lanes = if t.lanes == 1 {
            String::new()
        } else {
            format!("x{}", t.lanes)
        };
        invalid(format!(
            "{name} has DLPack element type {kind}{}{lanes}, which dmsc does not support \
             (int8, uint8, int32, uint32, int64, uint64, float16, bfloat16, float32, float64)",
            t.bits
        ))
    })
}

/// Call `__dlpack__`, preferring the versioned capsule; for a CUDA tensor with `stream`
/// (the stream dmsc orders its call on: the producer orders its work on the tensor before it).
fn export<'py>(obj: &Bound<'py, PyAny>, stream: Option<usize>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    // The DLPack protocol forbids `stream=0` for CUDA (it is ambiguous); the legacy default
    // stream, whose driver handle is 0 (torch's default stream reports `cuda_stream == 0`),
    // is 1 there, as `torch.utils.dlpack.from_dlpack` maps it.
    let stream = stream.map(|s| if s == 0 { 1 } else { s });
    let kwargs = PyDict::new(py);
    if let Some(s) = stream {
        kwargs.set_item("stream", s)?;
    }
    let legacy = PyDict::new(py);
    if let Some(s) = stream {
        legacy.set_item("stream", s)?;
    }
    kwargs.set_item("max_version", (1u32, 0u32))?;
    match obj.call_method("__dlpack__", (), Some(&kwargs)) {
        Ok(c) => Ok(c),
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            obj.call_method("__dlpack__", (), Some(&legacy))
        }
        Err(e) => Err(e),
    }
}

/// Import `obj` (which has `__dlpack__`) without copying.
pub fn import(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<DlView> {
    // A CUDA tensor is exported for the tensor's current stream, which the call orders on.
    let stream = match dlpack_device(obj) {
        Ok(Some((KDL_CUDA, id))) => {
            let device = u32::try_from(id).map_err(|_| {
                invalid(format!(
                    "{name} is on CUDA device {id}, which is not a device ordinal"
                ))
            })?;
            Some(crate::cuda_array::current_stream(obj, device).map_err(|e| {
                invalid(format!(
                    "{name}: finding its current CUDA stream failed: {}",
                    e.value(obj.py())
                ))
            })?)
        }
        Ok(_) => None,
        Err(e) => {
            return Err(invalid(format!(
                "{name}: its __dlpack_device__() failed: {}",
                e.value(obj.py())
            )))
        }
    };
    let cap = export(obj, stream).map_err(|e| {
        invalid(format!(
            "{name}: its __dlpack__() failed: {}",
            e.value(obj.py())
        ))
    })?;
    let p = cap.as_ptr();
    // SAFETY: `p` is a live object (owned by `cap`); PyCapsule_IsValid accepts any object.
    let versioned = unsafe { ffi::PyCapsule_IsValid(p, NAME_VERSIONED.as_ptr()) } == 1;
    // SAFETY: as above.
    let legacy = unsafe { ffi::PyCapsule_IsValid(p, NAME_LEGACY.as_ptr()) } == 1;
    if !versioned && !legacy {
        return Err(invalid(format!(
            "{name}: __dlpack__() did not return an unused DLPack capsule"
        )));
    }
    let (name_c, used) = if versioned {
        (NAME_VERSIONED, USED_VERSIONED)
    } else {
        (NAME_LEGACY, USED_LEGACY)
    };
    // SAFETY: the capsule is valid under `name_c` (checked above).
    let raw = unsafe { ffi::PyCapsule_GetPointer(p, name_c.as_ptr()) };
    if raw.is_null() {
        return Err(PyErr::fetch(obj.py()));
    }
    // Take ownership: from now on the capsule's destructor leaves the tensor to us.
    // SAFETY: valid capsule; `used` is a 'static C string, as PyCapsule_SetName requires.
    if unsafe { ffi::PyCapsule_SetName(p, used.as_ptr()) } != 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    let (guard, flags) = if versioned {
        let m = raw.cast::<DlManagedTensorVersioned>();
        // SAFETY: a `dltensor_versioned` capsule holds a DLManagedTensorVersioned.
        let flags = unsafe { (*m).flags };
        // SAFETY: as above.
        let major = unsafe { (*m).version.major };
        let guard = DlGuard {
            managed: Managed::Versioned(m),
        };
        if major != 1 {
            return Err(invalid(format!(
                "{name}: DLPack version {major} is not supported (dmsc reads version 1)"
            )));
        }
        (guard, flags)
    } else {
        let m = raw.cast::<DlManagedTensor>();
        (
            DlGuard {
                managed: Managed::Legacy(m),
            },
            0,
        )
    };
    // SAFETY: the guard owns a live managed tensor; its DLTensor stays valid until the
    // deleter runs (when the guard drops).
    let t: &DlTensor = unsafe {
        match guard.managed {
            Managed::Legacy(m) => &(*m).dl_tensor,
            Managed::Versioned(m) => &(*m).dl_tensor,
        }
    };
    let kind = check_device(name, t.device.device_type, t.device.device_id)?;
    if kind != MemKind::Host && stream.is_none() {
        return Err(invalid(format!(
            "{name} is CUDA memory, but its __dlpack_device__() did not say so: dmsc cannot \
             tell which stream to order the call on"
        )));
    }
    let dtype = dtype_of(name, t.dtype)?;
    let ndim = usize::try_from(t.ndim)
        .map_err(|_| invalid(format!("{name}: DLPack tensor has ndim {}", t.ndim)))?;
    let shape: &[i64] = if ndim == 0 || t.shape.is_null() {
        &[]
    } else {
        // SAFETY: DLPack guarantees `shape` points to `ndim` values.
        unsafe { std::slice::from_raw_parts(t.shape, ndim) }
    };
    let mut elems: usize = 1;
    for &s in shape {
        let s = usize::try_from(s)
            .map_err(|_| invalid(format!("{name}: DLPack tensor has a negative dimension")))?;
        elems = elems
            .checked_mul(s)
            .ok_or_else(|| invalid(format!("{name}: DLPack tensor size overflows")))?;
    }
    if !t.strides.is_null() && ndim > 0 && elems > 1 {
        // SAFETY: DLPack guarantees `strides` (when not null) points to `ndim` values.
        let strides = unsafe { std::slice::from_raw_parts(t.strides, ndim) };
        let mut want: i64 = 1;
        for (&s, &st) in shape.iter().zip(strides).rev() {
            if s != 1 && st != want {
                return Err(invalid(format!(
                    "{name} is not contiguous (shape {shape:?}, strides {strides:?}); pass a \
                     contiguous tensor (e.g. .contiguous() or numpy.ascontiguousarray)"
                )));
            }
            want = want.saturating_mul(s);
        }
    }
    let len = elems
        .checked_mul(dtype.size())
        .ok_or_else(|| invalid(format!("{name}: DLPack tensor size overflows")))?;
    let offset = usize::try_from(t.byte_offset)
        .map_err(|_| invalid(format!("{name}: DLPack byte_offset overflows")))?;
    let ptr = if len == 0 || t.data.is_null() {
        std::ptr::NonNull::<u8>::dangling().as_ptr()
    } else {
        t.data.cast::<u8>().wrapping_add(offset)
    };
    let rows = if shape.is_empty() {
        1
    } else {
        usize::try_from(shape[0]).unwrap_or(0)
    };
    Ok(DlView {
        ptr,
        len,
        dtype,
        rows,
        readonly: flags & (FLAG_READ_ONLY | FLAG_IS_COPIED) != 0,
        kind,
        stream: stream.unwrap_or(0),
        guard,
    })
}
