//! Compiling the kernels ([`super::kernels::SOURCE`]) with NVRTC at run time, cached per
//! target architecture.
//!
//! A device gets a CUBIN for its exact architecture (`sm_XY`), which a driver of the same CUDA
//! major version loads without JIT even when NVRTC is newer than the driver (PTX from a newer
//! NVRTC is refused by an older driver, `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`). PTX for a
//! virtual architecture (`compute_XY`) needs no GPU at all, which is what CI checks.
//! Contraction of multiplies and adds is off (`--fmad=false`) so the kernels round as the
//! host kernels do.
//!
//! Images are cached in memory per (architecture, kind), and on disk when
//! `DMSC_CUDA_CACHE_DIR` names a folder: there each image is a file named by a hash of the
//! source and the options, so a changed source never loads a stale image, and a machine
//! without NVRTC (a GPU machine with only the driver) can run images compiled elsewhere
//! (`examples/cuda_kernel_cache.rs` fills such a folder). Sources: NVRTC user guide (nvrtcCompileProgram options, nvrtcGetCUBIN),
//! CUDA compatibility guide (minor version compatibility).

use super::driver;
use cudarc::nvrtc::{result, sys};
use dmsc_core::error::{Error, Result};
use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// What NVRTC produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// PTX for virtual architecture `compute_<arch>` (JIT-compiled by the driver at load).
    Ptx,
    /// Machine code for real architecture `sm_<arch>`.
    Cubin,
}

/// A compiled image of the kernels: PTX text (NUL-terminated) or a CUBIN, either of which
/// `cuModuleLoadData` takes.
#[derive(Debug)]
pub struct Image {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Which kind.
    pub output: Output,
    /// The architecture as `major * 10 + minor` (80 for sm_80).
    pub arch: u32,
}

/// The environment variable naming the on-disk cache folder.
pub const CACHE_DIR_ENV: &str = "DMSC_CUDA_CACHE_DIR";

/// Compile the kernels for `arch` (`major * 10 + minor`), or return the copy compiled before
/// in this process, or the one in `DMSC_CUDA_CACHE_DIR`. Errors when it is in neither cache
/// and NVRTC is missing or the compile fails (with NVRTC's log).
pub fn compile(arch: u32, output: Output) -> Result<Arc<Image>> {
    type Cache = Mutex<HashMap<(u32, Output), Arc<Image>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(i) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(arch, output))
    {
        return Ok(i.clone());
    }
    let dir = std::env::var_os(CACHE_DIR_ENV).map(PathBuf::from);
    let image = Arc::new(compile_with_disk_cache(arch, output, dir.as_deref())?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((arch, output), image.clone());
    Ok(image)
}

/// The NVRTC options for `arch` and `output`.
fn options(arch: u32, output: Output) -> [String; 3] {
    let target = match output {
        Output::Ptx => format!("--gpu-architecture=compute_{arch}"),
        Output::Cubin => format!("--gpu-architecture=sm_{arch}"),
    };
    [target, "--fmad=false".into(), "--std=c++14".into()]
}

/// The cache file of an image: FNV-1a of the source and the options, and the target.
pub fn cache_file_name(arch: u32, output: Output) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let opts = options(arch, output).join(" ");
    for b in super::kernels::SOURCE
        .bytes()
        .chain([0])
        .chain(opts.bytes())
    {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    match output {
        Output::Ptx => format!("dmsc-kernels-{h:016x}-compute_{arch}.ptx"),
        Output::Cubin => format!("dmsc-kernels-{h:016x}-sm_{arch}.cubin"),
    }
}

/// Read the image from `dir` if it is there; else compile it and write it there (a failed
/// write is logged, not an error: the cache is an optimisation).
pub fn compile_with_disk_cache(arch: u32, output: Output, dir: Option<&Path>) -> Result<Image> {
    let file = dir.map(|d| d.join(cache_file_name(arch, output)));
    if let Some(bytes) = file.as_ref().and_then(|f| std::fs::read(f).ok()) {
        return Ok(Image {
            bytes,
            output,
            arch,
        });
    }
    let image = compile_uncached(arch, output)?;
    if let Some(f) = file {
        let written = f
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&f, &image.bytes));
        if let Err(e) = written {
            log::warn!("cannot write the CUDA kernel cache {}: {e}", f.display());
        }
    }
    Ok(image)
}

fn nvrtc_error(context: &str, e: result::NvrtcError) -> Error {
    Error::System {
        context: format!("NVRTC: {context}"),
        errno: None,
        detail: format!("{:?}", e.0),
    }
}

/// Destroys the program on every path out of [`compile_uncached`].
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by create_program and destroyed only here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

fn compile_uncached(arch: u32, output: Output) -> Result<Image> {
    driver::nvrtc_present()?;
    let src = CString::new(super::kernels::SOURCE)
        .map_err(|_| Error::internal("kernels.cu contains a NUL byte"))?;
    let name = c"dmsc_kernels.cu";
    let prog = Program(
        result::create_program(&src, Some(name)).map_err(|e| nvrtc_error("create program", e))?,
    );
    let options = options(arch, output);
    // SAFETY: `prog` is a live program; `src` and `name` outlive it (dropped after it).
    let compiled = unsafe { result::compile_program(prog.0, &options) };
    if let Err(e) = compiled {
        // SAFETY: as above.
        let log = unsafe { result::get_program_log(prog.0) }
            .map(|l| {
                let bytes: Vec<u8> = l.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        return Err(Error::System {
            context: format!("NVRTC: compiling the kernels with {}", options.join(" ")),
            errno: None,
            detail: format!("{:?}: {log}", e.0),
        });
    }
    let bytes = match output {
        Output::Ptx => {
            // SAFETY: as above, compiled.
            let ptx = unsafe { result::get_ptx(prog.0) }.map_err(|e| nvrtc_error("get PTX", e))?;
            ptx.into_iter().map(|c| c as u8).collect()
        }
        Output::Cubin => {
            let mut size = 0usize;
            // SAFETY: as above; the size is written to a live usize.
            unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }
                .result()
                .map_err(|e| nvrtc_error("get CUBIN size", e))?;
            let mut bytes = vec![0u8; size];
            // SAFETY: `bytes` holds the `size` bytes NVRTC writes.
            unsafe { sys::nvrtcGetCUBIN(prog.0, bytes.as_mut_ptr() as *mut _) }
                .result()
                .map_err(|e| nvrtc_error("get CUBIN", e))?;
            bytes
        }
    };
    Ok(Image {
        bytes,
        output,
        arch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::kernels;
    use std::path::PathBuf;

    /// NVRTC from the environment, or from the wheel `scripts/test-all.sh` installs into
    /// `target/nvrtc-venv`; `None` (the test prints why and skips) when there is neither.
    fn nvrtc() -> Option<()> {
        if std::env::var_os(driver::NVRTC_LIB_ENV).is_none() {
            let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/nvrtc-venv/lib");
            let found = std::fs::read_dir(&venv).ok().and_then(|d| {
                d.flatten()
                    .map(|p| {
                        p.path()
                            .join("site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12")
                    })
                    .find(|p| p.exists())
            });
            if let Some(lib) = found {
                driver::preload(&lib).expect("the wheel's libnvrtc loads");
            }
        }
        match driver::nvrtc_present() {
            Ok(()) => Some(()),
            Err(e) => {
                crate::cuda::skip(&format!("the NVRTC compile check: {e}"));
                None
            }
        }
    }

    /// The names of the entry points a PTX module defines.
    fn ptx_entries(ptx: &str) -> Vec<String> {
        ptx.lines()
            .filter_map(|l| l.trim_start().strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap().trim().to_string())
            .collect()
    }

    #[test]
    fn nvrtc_compiles_every_kernel_to_ptx_without_a_gpu() {
        if nvrtc().is_none() {
            return;
        }
        for arch in [70, 80, 90] {
            let image = compile(arch, Output::Ptx).unwrap();
            let ptx = String::from_utf8_lossy(&image.bytes);
            assert!(
                ptx.contains(&format!(".target sm_{arch}")),
                "PTX for the wrong target"
            );
            let entries = ptx_entries(&ptx);
            for name in kernels::all_kernels() {
                assert!(
                    entries.contains(&name),
                    "PTX for compute_{arch} lacks {name}"
                );
            }
            assert_eq!(entries.len(), kernels::all_kernels().len());
            eprintln!(
                "compute_{arch}: {} kernels, {} bytes of PTX",
                entries.len(),
                ptx.len()
            );
        }
        // Cached: the second request is the same image.
        assert!(Arc::ptr_eq(
            &compile(80, Output::Ptx).unwrap(),
            &compile(80, Output::Ptx).unwrap()
        ));
    }

    #[test]
    fn nvrtc_compiles_a_cubin_for_hopper_without_a_gpu() {
        if nvrtc().is_none() {
            return;
        }
        let image = compile(90, Output::Cubin).unwrap();
        assert_eq!(&image.bytes[..4], b"\x7fELF", "a CUBIN is an ELF image");
    }

    #[test]
    fn the_disk_cache_is_read_before_nvrtc_and_keyed_by_the_source() {
        // An image in the cache is used as it is, with or without NVRTC: architecture 1
        // does not exist, so only the cache can answer.
        let dir = std::env::temp_dir().join(format!("dmsc-nvrtc-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name = cache_file_name(1, Output::Cubin);
        assert!(name.ends_with("-sm_1.cubin"), "{name}");
        assert_ne!(name, cache_file_name(1, Output::Ptx));
        std::fs::write(dir.join(&name), b"cached image").unwrap();
        let image = compile_with_disk_cache(1, Output::Cubin, Some(&dir)).unwrap();
        assert_eq!(image.bytes, b"cached image");
        // With NVRTC, a miss compiles and fills the cache.
        if nvrtc().is_some() {
            let image = compile_with_disk_cache(80, Output::Ptx, Some(&dir)).unwrap();
            let file = dir.join(cache_file_name(80, Output::Ptx));
            assert_eq!(std::fs::read(file).unwrap(), image.bytes);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_architecture_is_an_error_with_nvrtcs_log() {
        if nvrtc().is_none() {
            return;
        }
        let e = compile(11, Output::Ptx).unwrap_err().to_string();
        assert!(e.contains("compute_11"), "{e}");
    }
}
