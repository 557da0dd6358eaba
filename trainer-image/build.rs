//! Makes the `demeter` binary find libtorch at run time without LD_LIBRARY_PATH.
use std::{env, path::Path};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = env::var("LIBTORCH") else {
        return;
    };
    let lib = Path::new(&libtorch).join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // The default `--as-needed` link drops libtorch_cuda.so, since no symbol of it is referenced
    // directly; without it libtorch never registers its CUDA backend and the GPU is invisible.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
