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
        (ReduceOp::BAnd, [0, 3 & -5, 7 & -9, 1]),
        (ReduceOp::BOr, [3, -5, -9, i32::MAX]),
        (ReduceOp::BXor, [3, -5 ^ 3, 7 ^ -9, i32::MAX - 1]),
        (ReduceOp::PreMulSum, [3, -2, -2, i32::MIN]),
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

#[test]
fn bitwise_ops_refuse_float_types() {
    for dtype in [
        DataType::Float32,
        DataType::Float16,
        DataType::Float64,
        DataType::Bfloat16,
    ] {
        for op in [ReduceOp::BAnd, ReduceOp::BOr, ReduceOp::BXor] {
            let mut d = vec![0u8; 8];
            let e = reduce_in_place(dtype, op, &mut d, &[0u8; 8]).unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("{op} applies to integer types only, not {dtype}")),
                "{e}"
            );
            let e = reduce_into(dtype, op, &mut d, &[0u8; 8], &[0u8; 8]).unwrap_err();
            assert!(e.to_string().contains("integer types only"), "{e}");
        }
    }
    let mut d = bytes(&[0b1100u8, 0xff]);
    reduce_in_place(
        DataType::Uint8,
        ReduceOp::BXor,
        &mut d,
        &bytes(&[0b1010u8, 0x0f]),
    )
    .unwrap();
    assert_eq!(d, [0b0110, 0xf0]);
}

#[test]
fn scale_mul_multiplies_every_type() {
    let mut d = vec![0u8; 16];
    scale_mul(
        DataType::Int32,
        &mut d,
        Some(&bytes(&[1i32, -2, i32::MAX, 0])),
        3.0,
    )
    .unwrap();
    assert_eq!(from_bytes::<i32>(&d), [3, -6, i32::MAX.wrapping_mul(3), 0]);
    let mut d = bytes(&[250u8, 3]);
    scale_mul(DataType::Uint8, &mut d, None, 2.0).unwrap();
    assert_eq!(d, [244, 6], "in place, wrapping");
    let mut d = bytes(&[1.5f32, -2.0]);
    scale_mul(DataType::Float32, &mut d, None, 0.5).unwrap();
    assert_eq!(from_bytes::<f32>(&d), [0.75, -1.0]);
    let mut d = vec![0u8; 16];
    scale_mul(
        DataType::Float64,
        &mut d,
        Some(&bytes(&[1.0f64, 3.0])),
        1.0 / 3.0,
    )
    .unwrap();
    assert_eq!(from_bytes::<f64>(&d), [1.0 / 3.0, 1.0]);
    let mut d = bytes(&[f16::from_f32(3.0), f16::from_f32(-0.5)]);
    scale_mul(DataType::Float16, &mut d, None, 4.0).unwrap();
    assert_eq!(
        from_bytes::<f16>(&d),
        [f16::from_f32(12.0), f16::from_f32(-2.0)]
    );
    let mut d = bytes(&[bf16::from_f32(3.0)]);
    scale_mul(DataType::Bfloat16, &mut d, None, 0.25).unwrap();
    assert_eq!(from_bytes::<bf16>(&d), [bf16::from_f32(0.75)]);
}

#[test]
fn scale_mul_factors_are_checked() {
    let mut d = vec![0u8; 4];
    let e = scale_mul(DataType::Int32, &mut d, None, 2.5).unwrap_err();
    assert!(
        e.to_string()
            .contains("factor 2.5 is not a whole number, which int32 needs"),
        "{e}"
    );
    let e = scale_mul(DataType::Float32, &mut d, None, f64::NAN).unwrap_err();
    assert!(e.to_string().contains("not a finite number"), "{e}");
    let e = scale_mul(DataType::Int64, &mut [0u8; 8], None, 1e300).unwrap_err();
    assert!(e.to_string().contains("beyond 2^53"), "{e}");
    assert!(scale_mul(DataType::Int64, &mut [0u8; 8], None, 9007199254740992.0).is_ok());
    assert!(scale_mul(DataType::Float32, &mut d, Some(&[0u8; 8]), 1.0).is_err());
}
