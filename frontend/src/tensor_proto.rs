//! Decoding `TensorProto` (initializers and tensor attributes), external data included.
use crate::error::ImportError;
use onnx_protobuf::{tensor_proto::DataLocation, TensorProto};
use std::path::Path;
use xforge_ir::dtype::onnx_type_name;
use xforge_ir::{narrow, DType, Tensor, TensorData};

fn bad(name: &str, msg: impl Into<String>) -> ImportError {
    ImportError::BadTensor { name: name.to_string(), msg: msg.into() }
}

/// Opens `path` for reading without blocking (a FIFO or device must not hang the import) and
/// refuses anything but a regular file.
fn open_regular(name: &str, path: &Path) -> Result<std::fs::File, ImportError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000;
        opts.custom_flags(O_NONBLOCK);
    }
    let f = opts.open(path).map_err(|e| bad(name, format!("cannot open external data {}: {e}", path.display())))?;
    let meta = f.metadata().map_err(|e| bad(name, format!("cannot read external data {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(bad(name, format!("external data {} is not a regular file", path.display())));
    }
    Ok(f)
}

/// Reads the `want` bytes of an external-data tensor, refusing paths that leave the model's
/// folder (after symlinks are resolved, as onnxruntime does), files that are not regular, and
/// ranges of another size before anything is allocated.
fn external_bytes(t: &TensorProto, base: Option<&Path>, want: usize) -> Result<Vec<u8>, ImportError> {
    let name = &t.name;
    let mut location = None;
    let (mut offset, mut length) = (0u64, None);
    for kv in &t.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => {
                offset = kv
                    .value
                    .parse()
                    .map_err(|_| bad(name, format!("external data offset '{}' is not a number", kv.value)))?
            }
            "length" => {
                length = Some(
                    kv.value
                        .parse::<u64>()
                        .map_err(|_| bad(name, format!("external data length '{}' is not a number", kv.value)))?,
                )
            }
            _ => {}
        }
    }
    let loc = location.ok_or_else(|| bad(name, "external data has no location"))?;
    let rel = Path::new(&loc);
    let inside = || format!("external data location '{loc}' must be a relative path inside the model's folder");
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(bad(name, inside()));
    }
    let base = base.ok_or_else(|| bad(name, "external data needs the model's folder (load the model from a file)"))?;
    let path = base.join(rel);
    // a symlink inside the folder may point out of it: compare where both really are
    let real_base = base.canonicalize().map_err(|e| bad(name, format!("model folder {}: {e}", base.display())))?;
    let real =
        path.canonicalize().map_err(|e| bad(name, format!("cannot open external data {}: {e}", path.display())))?;
    if !real.starts_with(&real_base) {
        return Err(bad(name, format!("{} (it resolves to {})", inside(), real.display())));
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut f = open_regular(name, &real)?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let len = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(bad(
            name,
            format!("external data [{offset}, +{len}) lies beyond the end of {} ({size} bytes)", path.display()),
        ));
    }
    if len != want as u64 {
        return Err(bad(name, format!("holds {len} bytes of external data but its dims need {want}")));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| bad(name, e.to_string()))?;
    let mut buf = vec![0u8; want];
    f.read_exact(&mut buf).map_err(|e| bad(name, e.to_string()))?;
    Ok(buf)
}

/// Converts a `TensorProto` into a tensor, checking that the data matches the dims.
pub fn decode(t: &TensorProto, base: Option<&Path>) -> Result<Tensor, ImportError> {
    let name = if t.name.is_empty() { "<unnamed>" } else { t.name.as_str() };
    let dtype = DType::from_onnx_code(t.data_type).ok_or_else(|| ImportError::UnsupportedDtype {
        what: "tensor",
        name: name.to_string(),
        dtype: onnx_type_name(t.data_type).to_string(),
    })?;
    if t.dims.iter().any(|&d| d < 0) {
        return Err(bad(name, format!("negative dimension in {:?}", t.dims)));
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad(name, "dimensions overflow"))?;
    if t.segment.is_some() {
        return Err(bad(name, "segmented tensors are not supported"));
    }
    let external = t.data_location.enum_value() == Ok(DataLocation::EXTERNAL);
    let packed = narrow::per_byte(dtype);
    let data = if packed > 1 {
        // 4- and 2-bit types: packed low bits first, in raw bytes or one byte per int32
        let bytes = if external || !t.raw_data.is_empty() {
            if external {
                external_bytes(t, base, n.div_ceil(packed))?
            } else {
                t.raw_data.clone()
            }
        } else {
            t.int32_data.iter().map(|&v| v as u8).collect()
        };
        let codes = narrow::unpack(dtype, &bytes, n).ok_or_else(|| {
            bad(
                name,
                format!("holds {} bytes but dims {:?} of {dtype} need {}", bytes.len(), t.dims, n.div_ceil(packed)),
            )
        })?;
        TensorData::Narrow(dtype, codes)
    } else if external || !t.raw_data.is_empty() {
        let want = n.checked_mul(dtype.size()).ok_or_else(|| bad(name, "size overflows"))?;
        let raw = if external { external_bytes(t, base, want)? } else { t.raw_data.clone() };
        if raw.len() != want {
            return Err(bad(name, format!("holds {} bytes but dims {:?} of {dtype} need {want}", raw.len(), t.dims)));
        }
        TensorData::from_le_bytes(dtype, &raw).expect("length checked above")
    } else {
        let typed = match dtype {
            DType::F32 => TensorData::F32(t.float_data.clone()),
            DType::F64 => TensorData::F64(t.double_data.clone()),
            DType::I64 => TensorData::I64(t.int64_data.clone()),
            DType::U32 | DType::U64 => {
                TensorData::from_i128(dtype, &t.uint64_data.iter().map(|&v| v as i128).collect::<Vec<_>>())
            }
            DType::F16 => TensorData::F16(t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16)).collect()),
            DType::BF16 => TensorData::BF16(t.int32_data.iter().map(|&v| half::bf16::from_bits(v as u16)).collect()),
            d if d.is_narrow() => TensorData::Narrow(d, t.int32_data.iter().map(|&v| v as u8).collect()),
            _ => TensorData::from_i128(dtype, &t.int32_data.iter().map(|&v| v as i128).collect::<Vec<_>>()),
        };
        if typed.len() != n {
            return Err(bad(name, format!("holds {} elements but dims {:?} need {n}", typed.len(), t.dims)));
        }
        typed
    };
    Ok(Tensor::new(shape, data))
}
