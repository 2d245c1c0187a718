//! Rust element types that map to dmsc [`DataType`]s.

use dmsc_core::DataType;

/// A plain numeric type dmsc can move and reduce.
///
/// # Safety
/// Implementors must be plain old data of exactly `DTYPE.size()` bytes for which every bit
/// pattern is valid.
pub unsafe trait Element: Copy + Send + Sync + 'static {
    /// The matching data type.
    const DTYPE: DataType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        // SAFETY: a primitive number of the data type's size; every bit pattern is valid.
        unsafe impl Element for $t { const DTYPE: DataType = DataType::$d; }
    )*};
}
element!(i8 => Int8, u8 => Uint8, i32 => Int32, u32 => Uint32, i64 => Int64, u64 => Uint64,
         half::f16 => Float16, half::bf16 => Bfloat16, f32 => Float32, f64 => Float64);

/// View a slice of elements as bytes.
pub(crate) fn bytes<T: Element>(s: &[T]) -> &[u8] {
    // SAFETY: Element types are plain old data without padding.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s)) }
}

/// View a mutable slice of elements as bytes.
pub(crate) fn bytes_mut<T: Element>(s: &mut [T]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern written back is a valid element.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut u8, std::mem::size_of_val(s)) }
}
