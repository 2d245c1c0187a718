//! [`Buf`]: the memory of a Python argument, taken without copying from the buffer protocol
//! (numpy arrays, bytearray, memoryview, array.array), from DLPack (`__dlpack__`, e.g. torch
//! tensors, CPU or CUDA) or from `__cuda_array_interface__` (e.g. CuPy arrays), with its dmsc
//! data type, where it is (host or CUDA device memory, and then the stream the call orders
//! on), checked for contiguity and writability (the operation's builder checks alignment).

use crate::cuda_array;
use crate::dlpack::{self, DlGuard};
use crate::errors::invalid;
use dmsc::call::MemKind;
use dmsc::DataType;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::prelude::*;

/// What keeps a [`Buf`]'s memory alive and exported. Dropped while attached to the
/// interpreter (releasing a buffer or calling a DLPack deleter may run Python code).
enum Keep {
    Py(#[allow(dead_code)] PyUntypedBuffer),
    Dl(#[allow(dead_code)] DlGuard),
    /// The object exporting `__cuda_array_interface__` (the interface has no release).
    Obj(#[allow(dead_code)] Py<PyAny>),
}

/// A contiguous byte range of a Python object, with its element type.
pub struct Buf {
    /// Start of the memory (dangling but aligned when `len == 0`).
    pub ptr: *mut u8,
    /// Length in bytes (a whole number of `dtype` elements).
    pub len: usize,
    /// Element type.
    pub dtype: DataType,
    /// Length of the first dimension (1 for a scalar): the unit of all_to_all_v's splits.
    pub rows: usize,
    /// Host memory, or a CUDA device's.
    pub kind: MemKind,
    /// For device memory: the CUDA stream (raw handle, 0 the default stream) the call is
    /// ordered on.
    pub stream: usize,
    _keep: Keep,
}

// SAFETY: `Buf` is a pointer into memory kept alive by `_keep` (a Py_buffer export or an owned
// DLPack tensor); both may be moved to and used from any thread.
unsafe impl Send for Buf {}
// SAFETY: shared access only reads the plain fields.
unsafe impl Sync for Buf {}

impl Buf {
    /// Take `obj`'s memory. `name` is the argument's name in error messages; `writable` asks
    /// for memory dmsc may write (a read-only buffer is then an `InvalidArgument`).
    pub fn get(name: &str, obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Buf> {
        // SAFETY: `obj` is a live object; PyObject_CheckBuffer only inspects its type.
        let has_buffer = unsafe { pyo3::ffi::PyObject_CheckBuffer(obj.as_ptr()) } == 1;
        let buf = if has_buffer {
            from_buffer(name, obj, writable)?
        } else if obj.hasattr(pyo3::intern!(obj.py(), "__dlpack__"))? {
            from_dlpack(name, obj, writable)?
        } else if obj.hasattr(pyo3::intern!(obj.py(), "__cuda_array_interface__"))? {
            from_cuda_array(name, obj, writable)?
        } else {
            return Err(invalid(format!(
                "{name} must be a buffer (numpy array, bytearray, memoryview, ...), a \
                 DLPack tensor (e.g. a torch tensor) or an object with \
                 __cuda_array_interface__ (e.g. a CuPy array), not {}",
                type_name(obj)
            )));
        };
        Ok(buf)
    }

    /// Number of elements.
    pub fn elems(&self) -> usize {
        self.len / self.dtype.size()
    }

    /// The memory as a span, for the builders of `dmsc::call`.
    pub fn span(&self) -> dmsc::call::Span {
        dmsc::call::Span::in_memory(self.ptr, self.len, self.kind)
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown type".into())
}

fn read_only(name: &str) -> PyErr {
    invalid(format!(
        "{name} is read-only, but dmsc writes the result into it (pass a writable array, \
         or the result's destination as out=)"
    ))
}

fn from_buffer(name: &str, obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Buf> {
    let b = PyUntypedBuffer::get(obj).map_err(|e| {
        invalid(format!(
            "{name}: exporting its buffer failed: {}",
            e.value(obj.py())
        ))
    })?;
    if writable && b.readonly() {
        return Err(read_only(name));
    }
    if !b.is_c_contiguous() {
        return Err(invalid(format!(
            "{name} is not contiguous (shape {:?}, strides {:?}); pass a C-contiguous array \
             (e.g. numpy.ascontiguousarray)",
            b.shape(),
            b.strides()
        )));
    }
    let dtype = dtype_of_format(b.format().to_bytes(), b.item_size()).ok_or_else(|| {
        invalid(format!(
            "{name} has element format '{}' ({} bytes), which dmsc does not support (int8, \
             uint8, int32, uint32, int64, uint64, float16, float32, float64; bfloat16 via \
             DLPack)",
            b.format().to_string_lossy(),
            b.item_size()
        ))
    })?;
    let len = b.len_bytes();
    let ptr = if len == 0 || b.buf_ptr().is_null() {
        std::ptr::NonNull::<u8>::dangling().as_ptr()
    } else {
        b.buf_ptr().cast::<u8>()
    };
    let rows = b.shape().first().copied().unwrap_or(1);
    Ok(Buf {
        ptr,
        len,
        dtype,
        rows,
        kind: MemKind::Host,
        stream: 0,
        _keep: Keep::Py(b),
    })
}

fn from_dlpack(name: &str, obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Buf> {
    let v = dlpack::import(name, obj)?;
    if writable && v.readonly {
        return Err(read_only(name));
    }
    Ok(Buf {
        ptr: v.ptr,
        len: v.len,
        dtype: v.dtype,
        rows: v.rows,
        kind: v.kind,
        stream: v.stream,
        _keep: Keep::Dl(v.guard),
    })
}

fn from_cuda_array(name: &str, obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Buf> {
    let a = cuda_array::import(name, obj)?;
    if writable && a.readonly {
        return Err(read_only(name));
    }
    Ok(Buf {
        ptr: a.ptr,
        len: a.len,
        dtype: a.dtype,
        rows: a.rows,
        kind: MemKind::Cuda {
            device: a.device(name)?,
        },
        stream: a.stream,
        _keep: Keep::Obj(obj.clone().unbind()),
    })
}

/// The dmsc type of a struct-module format (as PEP 3118 buffers give it) of `size` bytes.
pub fn dtype_of_format(format: &[u8], size: usize) -> Option<DataType> {
    let (order, code) = match format {
        [] => (b'@', b'B'),
        [c] => (b'@', *c),
        [o, c] => (*o, *c),
        _ => return None,
    };
    let native = match order {
        b'@' | b'=' => true,
        b'<' => cfg!(target_endian = "little"),
        b'>' | b'!' => cfg!(target_endian = "big"),
        _ => return None,
    };
    if !native && size > 1 {
        return None;
    }
    match (code, size) {
        (b'b', 1) => Some(DataType::Int8),
        (b'B' | b'c', 1) => Some(DataType::Uint8),
        (b'h' | b'i' | b'l' | b'q' | b'n', 4) => Some(DataType::Int32),
        (b'h' | b'i' | b'l' | b'q' | b'n', 8) => Some(DataType::Int64),
        (b'H' | b'I' | b'L' | b'Q' | b'N', 4) => Some(DataType::Uint32),
        (b'H' | b'I' | b'L' | b'Q' | b'N', 8) => Some(DataType::Uint64),
        (b'e', 2) => Some(DataType::Float16),
        (b'f', 4) => Some(DataType::Float32),
        (b'd', 8) => Some(DataType::Float64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(dtype_of_format(b"f", 4), Some(DataType::Float32));
        assert_eq!(dtype_of_format(b"<e", 2), Some(DataType::Float16));
        assert_eq!(dtype_of_format(b"l", 8), Some(DataType::Int64));
        assert_eq!(dtype_of_format(b"L", 4), Some(DataType::Uint32));
        assert_eq!(dtype_of_format(b"", 1), Some(DataType::Uint8));
        assert_eq!(dtype_of_format(b"h", 2), None);
        assert_eq!(dtype_of_format(b"?", 1), None);
        assert_eq!(dtype_of_format(b"Zf", 8), None);
        assert_eq!(dtype_of_format(b">B", 1), Some(DataType::Uint8));
        if cfg!(target_endian = "little") {
            assert_eq!(dtype_of_format(b">f", 4), None);
        }
    }
}
