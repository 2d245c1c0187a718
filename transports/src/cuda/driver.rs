//! Finding the CUDA libraries before calling into them, and the driver's errors as dmsc's.
//!
//! cudarc loads `libcuda` and `libnvrtc` at run time and panics when a function is called
//! without its library (cudarc 0.19's `culib()`), so every entry point of dmsc's CUDA code
//! first asks [`driver_present`] or [`nvrtc_present`], which only try to open the library
//! (cudarc's `is_culib_present`), and returns an error naming what is missing instead.
//!
//! NVRTC often comes from the PyPI wheel `nvidia-cuda-nvrtc-cu12`, whose library sits in a
//! Python environment rather than on the loader's path. `DMSC_NVRTC_LIB` names that file;
//! [`preload`] opens it with `RTLD_GLOBAL`, after which the loader resolves cudarc's request
//! for `libnvrtc.so.12` to it by its SONAME (glibc matches the SONAMEs of loaded objects;
//! dlopen(3)).

use dmsc_core::error::{Error, Result};
use std::ffi::CString;
use std::path::Path;
use std::sync::OnceLock;

/// The environment variable naming the NVRTC library file to load (`libnvrtc.so.12`).
pub const NVRTC_LIB_ENV: &str = "DMSC_NVRTC_LIB";

/// Open the shared library at `path` for the whole process (`RTLD_NOW | RTLD_GLOBAL`), so
/// later opens by its SONAME find it. Errors with the loader's message.
pub fn preload(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid(format!("library path {} has a NUL byte", path.display())))?;
    // SAFETY: a NUL-terminated path; the handle is deliberately never closed, so the library
    // stays loaded for cudarc, which keeps its own handle for the process's lifetime.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated message owned by the loader.
        let msg = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(Error::invalid(format!(
            "cannot load {}: {msg}",
            path.display()
        )));
    }
    Ok(())
}

/// Whether the CUDA driver library (`libcuda.so`) can be loaded. Checked once.
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: is_culib_present only tries to open the library by its candidate names.
    *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// Whether NVRTC can be loaded: from the loader's path, or from the file named by
/// `DMSC_NVRTC_LIB` (preloaded first). `Err` says why not.
pub fn nvrtc_present() -> Result<()> {
    static PRESENT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PRESENT
        .get_or_init(|| {
            let mut tried = String::from("libnvrtc.so.12 on the loader's path");
            if let Some(path) = std::env::var_os(NVRTC_LIB_ENV) {
                tried = format!("{} (from {NVRTC_LIB_ENV})", Path::new(&path).display());
                preload(Path::new(&path)).map_err(|e| e.to_string())?;
            }
            // SAFETY: is_culib_present only tries to open the library by its candidate names.
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                Ok(())
            } else {
                Err(format!(
                    "NVRTC is not available: tried {tried}; install the PyPI wheel \
                     nvidia-cuda-nvrtc-cu12 and set {NVRTC_LIB_ENV} to its libnvrtc.so.12"
                ))
            }
        })
        .clone()
        .map_err(Error::usage)
}

/// The error for a call that needs the CUDA driver on a machine without one.
pub fn no_driver(what: &str) -> Error {
    Error::usage(format!(
        "{what} needs the CUDA driver, but libcuda.so cannot be loaded on this machine \
         (no NVIDIA driver installed?)"
    ))
}

/// A driver error as a dmsc error: `context` says what was being done.
pub fn error(context: impl Into<String>, e: cudarc::driver::DriverError) -> Error {
    let name = e
        .error_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("CUresult {}", e.0 as i32));
    let text = e
        .error_string()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Error::System {
        context: context.into(),
        errno: None,
        detail: format!("{name}: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preloading_a_missing_library_names_it() {
        let e = preload(Path::new("/nonexistent/libnvrtc.so.12")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/libnvrtc.so.12"), "{e}");
    }

    #[test]
    fn the_driver_probe_answers_without_panicking() {
        // On a machine without a driver this is false (and every CUDA entry point errors);
        // with one, true. Either way it must not panic.
        let present = driver_present();
        eprintln!("CUDA driver library present: {present}");
        assert!(no_driver("cudaMalloc").to_string().contains("libcuda.so"));
    }
}
