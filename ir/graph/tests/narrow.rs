//! The narrow types against ml_dtypes (the library ONNX's reference casts with): the codes and
//! values below were printed by `x.astype(ml_dtypes.<type>)` and ONNX's `saturate_cast`.
use xforge_ir::narrow::{decode, encode, pack, unpack, FloatFormat};
use xforge_ir::{DType, Tensor};

const X: [f64; 21] = [
    0.3,
    -0.3,
    1.75,
    2.5,
    5.0,
    7.0,
    100.0,
    -100.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    -0.0,
    460.0,
    470.0,
    61000.0,
    62000.0,
    7.5,
    -7.6,
    8.4,
    15.6,
    -9.0,
];

fn codes(dt: DType, saturate: bool) -> Vec<u8> {
    X.iter().map(|&x| encode(dt, x, saturate)).collect()
}

#[test]
fn floats_round_like_ml_dtypes() {
    // saturate = false: overflow is NaN, or infinity where the type has one
    let want: [(DType, [u8; 21]); 5] = [
        (DType::F4E2M1, [1, 9, 4, 4, 6, 7, 7, 15, 7, 15, 8, 8, 7, 7, 7, 7, 7, 15, 7, 7, 15]),
        (
            DType::F8E4M3FN,
            [42, 170, 62, 66, 74, 78, 108, 236, 127, 255, 127, 128, 126, 127, 127, 127, 79, 207, 80, 88, 209],
        ),
        (
            DType::F8E4M3FNUZ,
            [50, 178, 70, 74, 82, 86, 116, 244, 128, 128, 128, 0, 128, 128, 128, 128, 87, 215, 88, 96, 217],
        ),
        (DType::F8E5M2, [53, 181, 63, 65, 69, 71, 86, 214, 124, 252, 126, 128, 95, 95, 123, 124, 72, 200, 72, 76, 200]),
        (
            DType::F8E5M2FNUZ,
            [57, 185, 67, 69, 73, 75, 90, 218, 128, 128, 128, 0, 99, 99, 127, 128, 76, 204, 76, 80, 204],
        ),
    ];
    for (dt, w) in want {
        assert_eq!(codes(dt, false), w, "{dt}");
    }
}

#[test]
fn saturation_clamps_to_the_largest_value() {
    // saturate_cast of 100, -100, inf, -inf, NaN, -0, 460, 470, 61000, 62000
    let want = [
        (DType::F8E4M3FN, 448.0, [448.0, 448.0, 448.0, 448.0]),
        (DType::F8E4M3FNUZ, 240.0, [240.0, 240.0, 240.0, 240.0]),
        (DType::F8E5M2, 57344.0, [448.0, 448.0, 57344.0, 57344.0]),
        (DType::F8E5M2FNUZ, 57344.0, [448.0, 448.0, 57344.0, 57344.0]),
    ];
    for (dt, m, big) in want {
        let v: Vec<f64> = codes(dt, true).iter().map(|&c| decode(dt, c)).collect();
        assert_eq!([v[6], v[7], v[8], v[9]], [96.0, -96.0, m, -m], "{dt}");
        assert!(v[10].is_nan(), "{dt}: NaN stays NaN");
        assert_eq!(v[12..16], big, "{dt}");
        assert_eq!(FloatFormat::of(dt).unwrap().max(), m);
    }
}

#[test]
fn every_code_decodes_and_encodes_back() {
    for dt in [DType::F8E4M3FN, DType::F8E4M3FNUZ, DType::F8E5M2, DType::F8E5M2FNUZ, DType::F4E2M1] {
        let n = if dt == DType::F4E2M1 { 16 } else { 256 };
        for c in 0..n as u8 {
            let v = decode(dt, c);
            if v.is_nan() {
                continue;
            }
            assert_eq!(encode(dt, v, false), c, "{dt} code {c} = {v}");
        }
    }
    // midpoints round to the even code: 1.0625 lies between E4M3FN's 1 (code 56) and 1.125 (57)
    assert_eq!(encode(DType::F8E4M3FN, 1.0625, true), 56);
    assert_eq!(encode(DType::F8E4M3FN, 1.1875, true), 58);
    // 464 is halfway from 448 to the NaN above it: even is 448; more than that overflows
    assert_eq!(decode(DType::F8E4M3FN, encode(DType::F8E4M3FN, 464.0, false)), 448.0);
}

#[test]
fn integers_truncate_and_zero_what_does_not_fit() {
    // ONNX's Cast test: -9..=15 to INT4
    let x: Vec<f64> = (-9..=15).map(|v| v as f64).collect();
    let got: Vec<u8> = x.iter().map(|&v| encode(DType::I4, v, true)).collect();
    let want = [0, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(got, want);
    assert_eq!(decode(DType::I4, 8), -8.0);
    assert_eq!(decode(DType::I2, 3), -1.0);
    assert_eq!(decode(DType::U2, 3), 3.0);
    assert_eq!(encode(DType::U4, 15.6, true), 15);
    assert_eq!(encode(DType::I4, -7.6, true), 9);
}

#[test]
fn packing_is_low_bits_first() {
    // ONNX's make_tensor: INT4 [-1, 2, -8] packs to [47, 8]; UINT2 [1, 2, 3, 0, 3] to [57, 3]
    let i4: Vec<u8> = [-1i128, 2, -8].iter().map(|&v| xforge_ir::narrow::wrap(DType::I4, v)).collect();
    assert_eq!(pack(DType::I4, &i4), [47, 8]);
    assert_eq!(unpack(DType::I4, &[47, 8], 3).unwrap(), i4);
    assert_eq!(pack(DType::U2, &[1, 2, 3, 0, 3]), [57, 3]);
    assert_eq!(unpack(DType::U2, &[57, 3], 5).unwrap(), [1, 2, 3, 0, 3]);
    assert!(unpack(DType::U2, &[57, 3], 9).is_none(), "9 elements need 3 bytes");
    assert_eq!(pack(DType::F8E5M2, &[7, 9]), [7, 9]);
}

#[test]
fn tensors_of_narrow_types_cast_and_move() {
    let t = Tensor::from_f64(DType::F8E4M3FN, vec![2, 2], &[1.0, -2.0, 0.5, 1000.0]);
    assert_eq!(t.to_f64(), [1.0, -2.0, 0.5, 448.0]);
    assert_eq!(t.cast(DType::F32).to_f64(), [1.0, -2.0, 0.5, 448.0]);
    assert_eq!(t.cast(DType::I4).to_f64(), [1.0, -2.0, 0.0, 0.0]);
    let u = Tensor::from_i128(DType::I4, vec![3], &[7, -8, 9]);
    assert_eq!(u.to_f64(), [7.0, -8.0, -7.0], "integers wrap like any integer cast");
    assert_eq!(u.cast(DType::I8).to_i128(), [7, -8, -7]);
    assert_eq!(DType::from_onnx_code(17), Some(DType::F8E4M3FN));
    assert_eq!(DType::from_name("u2"), Some(DType::U2));
    assert_eq!(DType::F8E5M2.onnx_code(), 19);
}
