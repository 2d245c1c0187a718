//! Link settings of libdmsc.so: the SONAME `libdmsc.so.0` (0 is the ABI's major version).
//! rustc's own version script already limits the dynamic symbol table to the `#[no_mangle]`
//! API (`dmsc*`); tests/c/run.sh checks that with `nm -D`.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdmsc.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
