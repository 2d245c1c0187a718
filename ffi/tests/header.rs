//! include/dmsc.h is generated from ffi/src by cbindgen and committed. This test regenerates
//! it into memory and fails when the committed copy differs, so CI catches a stale header.
//! Refresh it with:
//!
//! ```text
//! DMSC_BLESS=1 cargo test -p dmsc-ffi --test header
//! ```

use std::path::Path;

const REFRESH: &str = "DMSC_BLESS=1 cargo test -p dmsc-ffi --test header";

fn generate(crate_dir: &Path) -> String {
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml parses");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_src(crate_dir.join("src/lib.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn header_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = crate_dir.join("../include/dmsc.h");
    let fresh = generate(crate_dir);
    if std::env::var_os("DMSC_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("writing include/dmsc.h");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(fresh.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "include/dmsc.h is out of date with ffi/src (first difference at line {line}).\n\
             Regenerate it with:\n\n    {REFRESH}\n\nand commit the result."
        );
    }
}
