//! The ONNX importer and its validation (decoding, attribute checks, type and shape inference):
//! any bytes give a model or an error, never a panic, an abort or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod capped_alloc;

fuzz_target!(|data: &[u8]| {
    let _ = xforge_frontend::parse(data, None, &xforge_frontend::ImportOptions::default());
});
