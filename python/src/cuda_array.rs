//! CUDA device memory from Python: `__cuda_array_interface__` (Numba's CUDA Array Interface,
//! version 3, as CuPy, Numba and torch CUDA tensors export it), and the CUDA stream a tensor
//! is used on.
//!
//! The interface gives the data pointer, shape, element type, strides and (version 3) the
//! stream the producer's work on the data is queued on; dmsc orders its call on that stream.
//! The device is not part of the interface: dmsc asks the CUDA driver
//! (`dmsc::cuda_device_of`), which is also where a machine without a
//! driver or GPU gets its clear error. Sources: "CUDA Array Interface (Version 3)", Numba
//! documentation; DLPack's `__dlpack__(stream=...)` semantics (Python array API standard).

use crate::buffer::dtype_of_format;
use crate::errors::{invalid, to_py};
use dmsc::DataType;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The memory an object's `__cuda_array_interface__` describes.
pub struct CudaArray {
    /// The first byte (device memory).
    pub ptr: *mut u8,
    /// Bytes.
    pub len: usize,
    /// Element type.
    pub dtype: DataType,
    /// Length of the first dimension (1 for a scalar).
    pub rows: usize,
    /// Whether the producer marked it read-only.
    pub readonly: bool,
    /// The stream (raw `cudaStream_t`; 0 for the default stream) the data is ready on.
    pub stream: usize,
}

/// Read `obj.__cuda_array_interface__`; `name` is the argument's name in errors.
pub fn import(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<CudaArray> {
    let py = obj.py();
    let cai = obj
        .getattr(pyo3::intern!(py, "__cuda_array_interface__"))
        .map_err(|e| {
            invalid(format!(
                "{name}: reading its __cuda_array_interface__ failed: {}",
                e.value(py)
            ))
        })?;
    let d = cai.cast::<PyDict>().map_err(|_| {
        invalid(format!(
            "{name}: its __cuda_array_interface__ is not a dict"
        ))
    })?;
    let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        Ok(d.get_item(k)?.filter(|v| !v.is_none()))
    };
    let bad = |what: &str| invalid(format!("{name}: __cuda_array_interface__ {what}"));
    let (addr, readonly): (usize, bool) = get("data")?
        .ok_or_else(|| bad("has no 'data' (pointer, read_only)"))?
        .extract()
        .map_err(|_| bad("'data' is not a (pointer, read_only) pair"))?;
    let shape: Vec<i64> = get("shape")?
        .ok_or_else(|| bad("has no 'shape'"))?
        .extract()
        .map_err(|_| bad("'shape' is not a tuple of integers"))?;
    let typestr: String = get("typestr")?
        .ok_or_else(|| bad("has no 'typestr'"))?
        .extract()
        .map_err(|_| bad("'typestr' is not a string"))?;
    let dtype = dtype_of_typestr(&typestr).ok_or_else(|| {
        invalid(format!(
            "{name} has element type '{typestr}' (__cuda_array_interface__), which dmsc does \
             not support (int8, uint8, int32, uint32, int64, uint64, float16, float32, float64)"
        ))
    })?;
    let mut elems: usize = 1;
    for &s in &shape {
        let s = usize::try_from(s).map_err(|_| bad("has a negative dimension"))?;
        elems = elems.checked_mul(s).ok_or_else(|| bad("size overflows"))?;
    }
    if let Some(strides) = get("strides")? {
        let strides: Vec<i64> = strides
            .extract()
            .map_err(|_| bad("'strides' is not a tuple of integers"))?;
        let mut want = dtype.size() as i64;
        for (&s, &st) in shape.iter().zip(&strides).rev() {
            if s != 1 && st != want && elems > 1 {
                return Err(invalid(format!(
                    "{name} is not contiguous (shape {shape:?}, strides {strides:?}); pass a \
                     contiguous array"
                )));
            }
            want = want.saturating_mul(s);
        }
    }
    if get("mask")?.is_some() {
        return Err(bad("has a mask, which dmsc does not support"));
    }
    let stream: usize = match get("stream")? {
        None => 0,
        Some(s) => s.extract().map_err(|_| bad("'stream' is not an integer"))?,
    };
    let len = elems
        .checked_mul(dtype.size())
        .ok_or_else(|| bad("size overflows"))?;
    let ptr = addr as *mut u8;
    Ok(CudaArray {
        ptr: if len == 0 {
            std::ptr::NonNull::<u8>::dangling().as_ptr()
        } else {
            ptr
        },
        len,
        dtype,
        rows: shape
            .first()
            .map_or(1, |&s| usize::try_from(s).unwrap_or(0)),
        readonly,
        stream,
    })
}

impl CudaArray {
    /// The CUDA device ordinal of the memory, from the driver (`name` names it in errors):
    /// the error of a machine without a driver or GPU comes from here.
    pub fn device(&self, name: &str) -> PyResult<u32> {
        if self.len == 0 {
            return Ok(0);
        }
        dmsc::cuda_device_of(name, self.ptr).map_err(to_py)
    }
}

/// The dmsc type of a NumPy array-interface type string (`<f4`, `|u1`, ...).
fn dtype_of_typestr(t: &str) -> Option<DataType> {
    let b = t.as_bytes();
    let [order, code, size @ ..] = b else {
        return None;
    };
    let size: usize = std::str::from_utf8(size).ok()?.parse().ok()?;
    let code = match (*code, size) {
        (b'i', 1) => b'b',
        (b'u', 1) => b'B',
        (b'i', _) => b'q',
        (b'u', _) => b'Q',
        (b'f', 2) => b'e',
        (b'f', 4) => b'f',
        (b'f', 8) => b'd',
        _ => return None,
    };
    let order = match order {
        b'|' => b'=',
        o => *o,
    };
    dtype_of_format(&[order, code], size)
}

/// The current CUDA stream of device `device` (raw handle) for a tensor `obj`: torch's
/// `torch.cuda.current_stream(device)` for a torch tensor, CuPy's current stream for a CuPy
/// array, else 1 (DLPack's and CUDA's legacy default stream).
pub fn current_stream(obj: &Bound<'_, PyAny>, device: u32) -> PyResult<usize> {
    let py = obj.py();
    let module: String = obj
        .get_type()
        .module()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let root = module.split('.').next().unwrap_or("");
    let s = match root {
        "torch" => py
            .import("torch.cuda")?
            .call_method1("current_stream", (device,))?
            .getattr("cuda_stream")?
            .extract()?,
        "cupy" => py
            .import("cupy.cuda")?
            .call_method0("get_current_stream")?
            .getattr("ptr")?
            .extract()?,
        _ => 1,
    };
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typestrs() {
        assert_eq!(dtype_of_typestr("<f4"), Some(DataType::Float32));
        assert_eq!(dtype_of_typestr("<f2"), Some(DataType::Float16));
        assert_eq!(dtype_of_typestr("<f8"), Some(DataType::Float64));
        assert_eq!(dtype_of_typestr("|u1"), Some(DataType::Uint8));
        assert_eq!(dtype_of_typestr("|i1"), Some(DataType::Int8));
        assert_eq!(dtype_of_typestr("<i8"), Some(DataType::Int64));
        assert_eq!(dtype_of_typestr("<u4"), Some(DataType::Uint32));
        assert_eq!(dtype_of_typestr("<c8"), None);
        assert_eq!(dtype_of_typestr("<b1"), None);
        assert_eq!(dtype_of_typestr("x"), None);
    }
}
