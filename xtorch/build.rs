//! Keeps `libtorch_cuda` in the binaries' DT_NEEDED (the linker's --as-needed would drop it: no
//! symbol of it is referenced directly, yet without it libtorch sees no CUDA device), when the
//! libtorch being linked has it; and records that libtorch's directory as a run path, so
//! binaries start without LD_LIBRARY_PATH (which, when set, still takes precedence).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    let lib = std::path::Path::new(&lib);
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
