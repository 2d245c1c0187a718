use super::*;
use crate::types::{DataType, ReduceOp};
use half::{bf16, f16};

fn bytes<T: Copy>(v: &[T]) -> Vec<u8> {
    // SAFETY: plain-old-data numbers viewed as bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        .to_vec()
}

fn from_bytes<T: Copy + Default>(b: &[u8]) -> Vec<T> {
    let mut v = vec![T::default(); b.len() / std::mem::size_of::<T>()];
    // SAFETY: the destination has exactly b.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr() as *mut u8, b.len()) };
    v
}

#[test]
fn int32_ops() {
    let a = [1i32, -5, 7, i32::MAX];
    let b = [2i32, 3, -9, 1];
    for (op, want) in [
        (ReduceOp::Sum, [3, -2, -2, i32::MIN]),
        (ReduceOp::Prod, [2, -15, -63, i32::MAX]),
        (ReduceOp::Min, [1, -5, -9, 1]),
        (ReduceOp::Max, [2, 3, 7, i32::MAX]),
    ] {
        let mut d = bytes(&a);
        reduce_in_place(DataType::Int32, op, &mut d, &bytes(&b)).unwrap();
        assert_eq!(from_bytes::<i32>(&d), want, "{op}");
        let mut d2 = vec![0u8; 16];
        reduce_into(DataType::Int32, op, &mut d2, &bytes(&a), &bytes(&b)).unwrap();
        assert_eq!(d, d2);
    }
}

#[test]
fn half_types_round_trip_through_f32() {
    let a: Vec<f16> = (0..3000).map(|i| f16::from_f32(i as f32 * 0.5)).collect();
    let b: Vec<f16> = (0..3000).map(|i| f16::from_f32(1.0 + i as f32)).collect();
    let mut d = bytes(&a);
    reduce_in_place(DataType::Float16, ReduceOp::Max, &mut d, &bytes(&b)).unwrap();
    let got = from_bytes::<u16>(&d);
    for i in 0..3000 {
        assert_eq!(got[i], b[i].to_bits());
    }
    let x: Vec<bf16> = (0..5).map(|i| bf16::from_f32(i as f32)).collect();
    let mut d = bytes(&x);
    reduce_in_place(DataType::Bfloat16, ReduceOp::Sum, &mut d, &bytes(&x)).unwrap();
    let got: Vec<f32> = from_bytes::<u16>(&d)
        .into_iter()
        .map(|b| bf16::from_bits(b).to_f32())
        .collect();
    assert_eq!(got, [0.0, 2.0, 4.0, 6.0, 8.0]);
}

#[test]
fn float_min_max_propagate_nan() {
    let a = [f32::NAN, 1.0];
    let b = [0.0f32, f32::NAN];
    for op in [ReduceOp::Min, ReduceOp::Max] {
        let mut d = bytes(&a);
        reduce_in_place(DataType::Float32, op, &mut d, &bytes(&b)).unwrap();
        let r = from_bytes::<f32>(&d);
        assert!(r[0].is_nan() && r[1].is_nan(), "{op}: {r:?}");
    }
}

#[test]
fn scale_div_all_types() {
    let mut d = bytes(&[7i64, -7, 9]);
    scale_div(DataType::Int64, &mut d, 2).unwrap();
    assert_eq!(from_bytes::<i64>(&d), [3, -3, 4]);
    let mut d = bytes(&[3.0f64]);
    scale_div(DataType::Float64, &mut d, 4).unwrap();
    assert_eq!(from_bytes::<f64>(&d), [0.75]);
    assert!(scale_div(DataType::Int8, &mut [1u8], 0).is_err());
}

#[test]
fn bad_lengths_are_errors() {
    let mut d = vec![0u8; 8];
    let e = reduce_in_place(DataType::Float32, ReduceOp::Sum, &mut d, &[0u8; 4]).unwrap_err();
    assert!(e.to_string().contains("reduction source"), "{e}");
    let mut d = vec![0u8; 6];
    assert!(reduce_in_place(DataType::Float32, ReduceOp::Sum, &mut d, &[0u8; 6]).is_err());
}
