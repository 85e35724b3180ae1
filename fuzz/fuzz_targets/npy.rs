//! The `.npy` reader (`--input x=FILE.npy`): any bytes give a tensor or an error; a tensor read
//! back from its own bytes is the same tensor.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod capped_alloc;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = xforge_ir::npy::from_bytes(data) {
        let again = xforge_ir::npy::from_bytes(&xforge_ir::npy::to_bytes(&t)).expect("a tensor's own bytes read back");
        assert_eq!(t.shape(), again.shape());
    }
});
