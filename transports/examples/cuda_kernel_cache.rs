//! Fill a CUDA kernel cache folder for GPUs of the given architectures, on a machine with
//! NVRTC and no GPU, so that a GPU machine with only the driver can load the kernels
//! (`DMSC_CUDA_CACHE_DIR`, see dmsc-transports' `cuda::nvrtc`).
//!
//!     DMSC_NVRTC_LIB=.../libnvrtc.so.12 cargo run -p dmsc-transports --features cuda \
//!         --example cuda_kernel_cache -- DIR 80 90
//!
//! Writes one CUBIN (`sm_<arch>`) and one PTX (`compute_<arch>`) per architecture.

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    use dmsc_transports::cuda::nvrtc::{compile_with_disk_cache, Output};
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: cuda_kernel_cache DIR ARCH... (ARCH as 90 for sm_90)");
        return std::process::ExitCode::FAILURE;
    };
    let dir = std::path::PathBuf::from(dir);
    for a in args {
        let Ok(arch) = a.parse::<u32>() else {
            eprintln!("{a} is not an architecture number (90 for sm_90)");
            return std::process::ExitCode::FAILURE;
        };
        for output in [Output::Cubin, Output::Ptx] {
            match compile_with_disk_cache(arch, output, Some(&dir)) {
                Ok(i) => println!("{:?} for {arch}: {} bytes", output, i.bytes.len()),
                Err(e) => {
                    eprintln!("{e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("built without the cuda feature: nothing to compile");
    std::process::exit(1);
}
