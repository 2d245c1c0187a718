//! The kernels' source checked on the host: `kernels.cu` compiled as C++ with
//! `host_shim.h` (which defines the CUDA built-ins it uses), loaded with `dlopen`, each
//! kernel "launched" one thread at a time over a small grid, and the results compared with
//! dmsc-core's host kernels ([`dmsc_core::reduce`]) for every data type and operator, and
//! with the `crc32c` crate for the CRC. The same source is what NVRTC compiles for the GPU
//! (`nvrtc.rs`), so a kernel that computes something else than the host fails here without
//! a GPU. What this cannot catch is a difference between the host's and the GPU's
//! arithmetic; the kernels use only IEEE 754 operations that both round the same way
//! (NVRTC is run with `--fmad=false` so no multiply-add is contracted).
//!
//! The C++ compiler is `$CXX`, else `c++`. Without one, the tests print why they skipped.

use super::kernels::{self, CRC32C_CHUNKS};
use dmsc_core::reduce;
use dmsc_core::{DataType, ReduceOp};
use std::ffi::{c_void, CString};
use std::process::Command;
use std::sync::OnceLock;

/// The launch shape: few enough threads to run one after another, enough blocks and
/// threads that every grid-stride loop goes round several times.
const GRID: u32 = 3;
const BLOCK: u32 = 5;

/// The host build of the kernels, loaded.
struct HostKernels {
    lib: *mut c_void,
}

// SAFETY: the handle is only used for dlsym, which is thread-safe; the kernels' launch
// state (the shim's threadIdx etc.) is guarded by LAUNCH.
unsafe impl Send for HostKernels {}
// SAFETY: as above.
unsafe impl Sync for HostKernels {}

/// Serializes launches: the shim's built-in variables are process-wide.
static LAUNCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn build() -> Result<HostKernels, String> {
    let dir = std::env::temp_dir().join(format!("dmsc-cuda-host-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The sources as compiled into this test binary, so it runs from any directory.
    let (src, shim) = (dir.join("kernels.cu"), dir.join("host_shim.h"));
    std::fs::write(&src, kernels::SOURCE)
        .map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    std::fs::write(&shim, include_str!("host_shim.h"))
        .map_err(|e| format!("cannot write {}: {e}", shim.display()))?;
    let out = dir.join("libdmsc_kernels_host.so");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let status = Command::new(&cxx)
        .args(["-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-include"])
        .arg(&shim)
        .args(["-x", "c++"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Err(e) => return Err(format!("no C++ compiler ({cxx}: {e})")),
        Ok(s) if !s.success() => panic!("{cxx} failed to compile kernels.cu as host C++ ({s})"),
        Ok(_) => {}
    }
    let path = CString::new(out.to_str().unwrap()).unwrap();
    // SAFETY: dlopen of a library we just built, whose only initializers are the shim's
    // static variables.
    let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!lib.is_null(), "dlopen({}) failed", out.display());
    Ok(HostKernels { lib })
}

/// The loaded host kernels, or why there are none (then the test prints it and skips).
fn host() -> Option<&'static HostKernels> {
    static HOST: OnceLock<Result<HostKernels, String>> = OnceLock::new();
    match HOST.get_or_init(build) {
        Ok(h) => Some(h),
        Err(why) => {
            super::skip(&format!(
                "the host check of kernels.cu needs a C++ compiler: {why}"
            ));
            None
        }
    }
}

impl HostKernels {
    fn sym(&self, name: &str) -> *mut c_void {
        let c = CString::new(name).unwrap();
        // SAFETY: a valid handle and a NUL-terminated name.
        let p = unsafe { libc::dlsym(self.lib, c.as_ptr()) };
        assert!(!p.is_null(), "kernels.cu defines no kernel {name}");
        p
    }

    /// Run `call` once per thread of a GRID × BLOCK launch, as the device would (in turn).
    fn launch(&self, mut call: impl FnMut()) {
        type SetThread = unsafe extern "C" fn(u32, u32, u32, u32);
        // SAFETY: the shim defines dmsc_host_set_thread with this signature.
        let set: SetThread = unsafe { std::mem::transmute(self.sym("dmsc_host_set_thread")) };
        let _guard = LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
        for b in 0..GRID {
            for t in 0..BLOCK {
                // SAFETY: plain stores to the shim's built-in variables.
                unsafe { set(GRID, BLOCK, b, t) };
                call();
            }
        }
    }

    fn reduce(&self, name: &str, dst: *mut u8, a: *const u8, b: *const u8, n: u64) {
        type K = unsafe extern "C" fn(*mut u8, *const u8, *const u8, u64);
        // SAFETY: every dmsc_reduce_* kernel has this signature (typed pointers are
        // passed as pointers in the C ABI).
        let k: K = unsafe { std::mem::transmute(self.sym(name)) };
        // SAFETY: the caller's buffers hold n elements of the kernel's type.
        self.launch(|| unsafe { k(dst, a, b, n) });
    }

    fn scale_div(&self, name: &str, dst: *mut u8, n: u64, divisor: u64) {
        type K = unsafe extern "C" fn(*mut u8, u64, u64);
        // SAFETY: the signature of every dmsc_scale_div_* kernel.
        let k: K = unsafe { std::mem::transmute(self.sym(name)) };
        // SAFETY: as in `reduce`.
        self.launch(|| unsafe { k(dst, n, divisor) });
    }

    fn scale_mul(&self, name: &str, dst: *mut u8, src: *const u8, n: u64, f: f64, whole: i64) {
        type K = unsafe extern "C" fn(*mut u8, *const u8, u64, f64, i64);
        // SAFETY: the signature of every dmsc_scale_mul_* kernel.
        let k: K = unsafe { std::mem::transmute(self.sym(name)) };
        // SAFETY: as in `reduce`.
        self.launch(|| unsafe { k(dst, src, n, f, whole) });
    }
}

/// 8-byte aligned bytes (core's kernels refuse misaligned buffers).
struct Buf(Vec<u64>, usize);

impl Buf {
    fn zeroed(len: usize) -> Buf {
        Buf(vec![0; len.div_ceil(8)], len)
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: the vector holds at least self.1 initialized bytes.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.1) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u8, self.1) }
    }
    fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr() as *mut u8
    }
}

/// `n` elements of `dtype`: random bit patterns (every NaN, infinity and subnormal of the
/// small float types among them) mixed with small values whose sums and products stay
/// exact or round at ties, from a fixed LCG.
fn values(dtype: DataType, n: usize, seed: u64) -> Buf {
    let size = dtype.size();
    let mut buf = Buf::zeroed(n * size);
    let mut x = seed;
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = x >> 11;
        let bits: u64 = if i % 2 == 0 || !dtype.is_float() {
            r
        } else {
            let v = (r % 4001) as f64 / 8.0 - 250.0;
            match dtype {
                DataType::Float16 => half::f16::from_f64(v).to_bits() as u64,
                DataType::Bfloat16 => half::bf16::from_f64(v).to_bits() as u64,
                DataType::Float32 => (v as f32).to_bits() as u64,
                _ => v.to_bits(),
            }
        };
        buf.bytes_mut()[i * size..(i + 1) * size].copy_from_slice(&bits.to_le_bytes()[..size]);
    }
    buf
}

/// Element `i` as bits, with every NaN read as one value (the GPU does not keep payloads).
fn element(dtype: DataType, bytes: &[u8], i: usize) -> u64 {
    let size = dtype.size();
    let mut w = [0u8; 8];
    w[..size].copy_from_slice(&bytes[i * size..(i + 1) * size]);
    let bits = u64::from_le_bytes(w);
    let nan = match dtype {
        DataType::Float16 => bits & 0x7fff > 0x7c00,
        DataType::Bfloat16 => bits & 0x7fff > 0x7f80,
        DataType::Float32 => bits & 0x7fff_ffff > 0x7f80_0000,
        DataType::Float64 => bits & (u64::MAX >> 1) > 0x7ff0_0000_0000_0000,
        _ => false,
    };
    if nan {
        u64::MAX
    } else {
        bits
    }
}

fn assert_same(what: &str, dtype: DataType, want: &[u8], got: &[u8]) {
    for i in 0..want.len() / dtype.size() {
        let (w, g) = (element(dtype, want, i), element(dtype, got, i));
        assert_eq!(
            w, g,
            "{what} on {dtype}: element {i} is {g:#x} on the kernel, {w:#x} on the host"
        );
    }
}

/// Per-rank premul_sum factors of each type: whole for integers, fractional (rounding in
/// every float type) for floats.
fn factors(dtype: DataType) -> (f64, f64) {
    if dtype.is_float() {
        (0.3, -1.7)
    } else {
        (3.0, -7.0)
    }
}

/// `out = a ⊕ b` for `op` the way the engine does it: premultiply for premul_sum, combine,
/// divide for avg (over `RANKS`), on the host kernels or on the kernels of kernels.cu.
const RANKS: usize = 3;

fn on_host(dtype: DataType, op: ReduceOp, a: &Buf, b: &Buf) -> Buf {
    let mut out = Buf::zeroed(a.1);
    let (mut a2, mut b2) = (Buf::zeroed(a.1), Buf::zeroed(b.1));
    a2.bytes_mut().copy_from_slice(a.bytes());
    b2.bytes_mut().copy_from_slice(b.bytes());
    if op == ReduceOp::PreMulSum {
        let (fa, fb) = factors(dtype);
        reduce::scale_mul(dtype, a2.bytes_mut(), None, fa).unwrap();
        reduce::scale_mul(dtype, b2.bytes_mut(), None, fb).unwrap();
    }
    reduce::reduce_into(dtype, op, out.bytes_mut(), a2.bytes(), b2.bytes()).unwrap();
    if op == ReduceOp::Avg {
        reduce::scale_div(dtype, out.bytes_mut(), RANKS).unwrap();
    }
    out
}

fn on_kernels(h: &HostKernels, dtype: DataType, op: ReduceOp, a: &Buf, b: &Buf) -> Buf {
    let n = (a.1 / dtype.size()) as u64;
    let mut out = Buf::zeroed(a.1);
    let (mut a2, mut b2) = (Buf::zeroed(a.1), Buf::zeroed(b.1));
    if op == ReduceOp::PreMulSum {
        let (fa, fb) = factors(dtype);
        let mul = kernels::scale_mul_kernel(dtype);
        let wa = reduce::factor_as_int(dtype, fa).unwrap();
        let wb = reduce::factor_as_int(dtype, fb).unwrap();
        let (pa, pb) = (a.0.as_ptr() as *const u8, b.0.as_ptr() as *const u8);
        h.scale_mul(&mul, a2.ptr(), pa, n, fa, wa);
        h.scale_mul(&mul, b2.ptr(), pb, n, fb, wb);
    } else {
        a2.bytes_mut().copy_from_slice(a.bytes());
        b2.bytes_mut().copy_from_slice(b.bytes());
    }
    let name = kernels::reduce_kernel(dtype, op).expect("a kernel for a valid pair");
    h.reduce(&name, out.ptr(), a2.ptr(), b2.ptr(), n);
    if op == ReduceOp::Avg {
        h.scale_div(
            &kernels::scale_div_kernel(dtype),
            out.ptr(),
            n,
            RANKS as u64,
        );
    }
    out
}

#[test]
fn every_kernel_exists_in_the_host_build() {
    let Some(h) = host() else { return };
    for name in kernels::all_kernels() {
        h.sym(&name);
    }
}

#[test]
fn kernels_match_the_host_reductions_for_every_type_and_op() {
    let Some(h) = host() else { return };
    let mut checked = 0;
    for dtype in DataType::ALL {
        for op in ReduceOp::ALL {
            if op.check_dtype(dtype).is_err() {
                continue;
            }
            for n in [0usize, 1, 14, 15, 16, 1001] {
                let a = values(dtype, n, 7 + n as u64);
                let b = values(dtype, n, 1000 + n as u64);
                let want = on_host(dtype, op, &a, &b);
                let got = on_kernels(h, dtype, op, &a, &b);
                assert_same(&format!("{op} (n = {n})"), dtype, want.bytes(), got.bytes());
            }
            checked += 1;
        }
    }
    // 6 integer types × 9 operators, 4 float types × 6 (no bitwise ones).
    assert_eq!(checked, 6 * 9 + 4 * 6);
}

#[test]
fn reductions_in_place_match_the_host() {
    let Some(h) = host() else { return };
    for dtype in [DataType::Int8, DataType::Float16, DataType::Float64] {
        let n = 333;
        let (mut a, b) = (values(dtype, n, 5), values(dtype, n, 6));
        let mut want = Buf::zeroed(a.1);
        want.bytes_mut().copy_from_slice(a.bytes());
        reduce::reduce_in_place(dtype, ReduceOp::Max, want.bytes_mut(), b.bytes()).unwrap();
        let name = kernels::reduce_kernel(dtype, ReduceOp::Max).unwrap();
        let pa = a.ptr();
        h.reduce(&name, pa, pa, b.0.as_ptr() as *const u8, n as u64);
        assert_same("in-place max", dtype, want.bytes(), a.bytes());
    }
}

#[test]
fn half_conversions_round_like_the_half_crate_for_every_value() {
    // Every float16 and bfloat16 bit pattern, multiplied by 1.0 and by a factor that
    // rounds: the kernels' conversions both ways against the `half` crate's.
    let Some(h) = host() else { return };
    for dtype in [DataType::Float16, DataType::Bfloat16] {
        let mut src = Buf::zeroed(65536 * 2);
        for (i, c) in src.bytes_mut().chunks_mut(2).enumerate() {
            c.copy_from_slice(&(i as u16).to_le_bytes());
        }
        for f in [1.0, 0.1, 3.3e-5, 70000.0] {
            let mut want = Buf::zeroed(src.1);
            reduce::scale_mul(dtype, want.bytes_mut(), Some(src.bytes()), f).unwrap();
            let mut got = Buf::zeroed(src.1);
            let name = kernels::scale_mul_kernel(dtype);
            h.scale_mul(&name, got.ptr(), src.ptr(), 65536, f, 0);
            assert_same(
                &format!("scale_mul by {f}"),
                dtype,
                want.bytes(),
                got.bytes(),
            );
        }
    }
}

#[test]
fn crc32c_chunks_combine_to_the_crate_crc() {
    let Some(h) = host() else { return };
    type K = unsafe extern "C" fn(*const u8, u64, u64, *mut u32);
    // SAFETY: the signature of dmsc_crc32c_chunks.
    let k: K = unsafe { std::mem::transmute(h.sym(CRC32C_CHUNKS)) };
    let data: Vec<u8> = (0..10_007u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for chunk in [1usize, 7, 64, 1000, 4096, 20_000] {
        for len in [0usize, 1, 9, 1000, 10_007] {
            let chunks = len.div_ceil(chunk);
            let mut out = vec![0u32; chunks.max(1)];
            let (src, dst) = (data.as_ptr(), out.as_mut_ptr());
            // SAFETY: `data` holds `len` bytes, `out` one CRC per chunk.
            h.launch(|| unsafe { k(src, len as u64, chunk as u64, dst) });
            let mut crc = 0u32;
            for (c, part) in out[..chunks].iter().enumerate() {
                let n = chunk.min(len - c * chunk);
                crc = crc32c::crc32c_combine(crc, *part, n);
            }
            assert_eq!(
                crc,
                crc32c::crc32c(&data[..len]),
                "CRC32C of {len} bytes in {chunk}-byte chunks"
            );
        }
    }
}
