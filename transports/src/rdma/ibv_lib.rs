//! The exported functions of `libibverbs.so.1`, resolved once at run time with
//! `dlopen(3)` and `dlvsym(3)`.
//!
//! Each function is looked up at the symbol version rdma-core exports it under (most at
//! `IBVERBS_1.1`, the current ABI; `ibv_create_comp_channel` and its kin at `IBVERBS_1.0`,
//! where they never changed; `ibv_reg_dmabuf_mr` at `IBVERBS_1.12`, optional), because the
//! library also keeps `IBVERBS_1.0` compatibility versions of `ibv_reg_mr`, `ibv_create_qp`
//! and others whose structs differ. This is what NCCL's `src/misc/ibvwrap.cc` does (read
//! for the approach, never copied). The library stays loaded for the life of the process.
//!
//! `ibv_post_send`, `ibv_post_recv`, `ibv_poll_cq` and `ibv_req_notify_cq` are not here:
//! they are inline in `<infiniband/verbs.h>` and go through the context's operations
//! ([`super::ibv_abi::IbvContextOps`]).

use super::ibv_abi::*;
use libc::{c_char, c_int, c_void};
use std::ffi::{CStr, CString};
use std::sync::OnceLock;

/// The shared object loaded at run time.
pub const LIBIBVERBS: &str = "libibverbs.so.1";

/// The resolved functions.
#[allow(missing_docs)]
pub struct IbvLib {
    pub get_device_list: unsafe extern "C" fn(num: *mut c_int) -> *mut *mut IbvDevice,
    pub free_device_list: unsafe extern "C" fn(list: *mut *mut IbvDevice),
    pub get_device_name: unsafe extern "C" fn(dev: *mut IbvDevice) -> *const c_char,
    pub open_device: unsafe extern "C" fn(dev: *mut IbvDevice) -> *mut IbvContext,
    pub close_device: unsafe extern "C" fn(ctx: *mut IbvContext) -> c_int,
    pub query_port:
        unsafe extern "C" fn(ctx: *mut IbvContext, port: u8, attr: *mut IbvPortAttr) -> c_int,
    pub query_gid: unsafe extern "C" fn(
        ctx: *mut IbvContext,
        port: u8,
        index: c_int,
        gid: *mut IbvGid,
    ) -> c_int,
    pub alloc_pd: unsafe extern "C" fn(ctx: *mut IbvContext) -> *mut IbvPd,
    pub dealloc_pd: unsafe extern "C" fn(pd: *mut IbvPd) -> c_int,
    pub reg_mr: unsafe extern "C" fn(
        pd: *mut IbvPd,
        addr: *mut c_void,
        len: usize,
        access: c_int,
    ) -> *mut IbvMr,
    pub dereg_mr: unsafe extern "C" fn(mr: *mut IbvMr) -> c_int,
    pub create_cq: unsafe extern "C" fn(
        ctx: *mut IbvContext,
        cqe: c_int,
        cq_context: *mut c_void,
        channel: *mut IbvCompChannel,
        comp_vector: c_int,
    ) -> *mut IbvCq,
    pub destroy_cq: unsafe extern "C" fn(cq: *mut IbvCq) -> c_int,
    pub create_qp: unsafe extern "C" fn(pd: *mut IbvPd, attr: *mut IbvQpInitAttr) -> *mut IbvQp,
    pub modify_qp: unsafe extern "C" fn(qp: *mut IbvQp, attr: *mut IbvQpAttr, mask: c_int) -> c_int,
    pub query_qp: unsafe extern "C" fn(
        qp: *mut IbvQp,
        attr: *mut IbvQpAttr,
        mask: c_int,
        init: *mut IbvQpInitAttr,
    ) -> c_int,
    pub destroy_qp: unsafe extern "C" fn(qp: *mut IbvQp) -> c_int,
    pub create_comp_channel: unsafe extern "C" fn(ctx: *mut IbvContext) -> *mut IbvCompChannel,
    pub destroy_comp_channel: unsafe extern "C" fn(ch: *mut IbvCompChannel) -> c_int,
    pub get_cq_event: unsafe extern "C" fn(
        ch: *mut IbvCompChannel,
        cq: *mut *mut IbvCq,
        cq_context: *mut *mut c_void,
    ) -> c_int,
    pub ack_cq_events: unsafe extern "C" fn(cq: *mut IbvCq, n: libc::c_uint),
    /// `IBVERBS_1.12` and later (rdma-core 34); `None` on older libraries.
    pub reg_dmabuf_mr: Option<
        unsafe extern "C" fn(
            pd: *mut IbvPd,
            offset: u64,
            len: usize,
            iova: u64,
            fd: c_int,
            access: c_int,
        ) -> *mut IbvMr,
    >,
}

/// The last `dlerror(3)` text.
fn dlerror_text() -> String {
    // SAFETY: dlerror returns a thread-local NUL-terminated string or null.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dynamic loader error".into()
    } else {
        // SAFETY: non-null and NUL-terminated, valid until the next dl* call on this thread.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// `dlvsym(handle, name, version)`, or why not.
fn sym(handle: *mut c_void, name: &str, version: &str) -> Result<*mut c_void, String> {
    let n = CString::new(name).expect("no NUL in symbol names");
    let v = CString::new(version).expect("no NUL in versions");
    // SAFETY: `handle` came from dlopen and is never closed; both strings are NUL-terminated.
    let p = unsafe { libc::dlvsym(handle, n.as_ptr(), v.as_ptr()) };
    if p.is_null() {
        Err(format!(
            "{LIBIBVERBS} has no {name}@{version} ({}); rdma-core is too old or damaged",
            dlerror_text()
        ))
    } else {
        Ok(p)
    }
}

/// The function pointer of type `F` at `p`.
///
/// # Safety
/// `F` must be an `unsafe extern "C" fn` type matching the C prototype of the function at `p`
/// (non-null).
unsafe fn fn_from<F: Copy>(p: *mut c_void) -> F {
    assert_eq!(
        std::mem::size_of::<F>(),
        std::mem::size_of::<*mut c_void>(),
        "a function pointer"
    );
    // SAFETY: same size (checked), and the caller guarantees `F` is the function's type.
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
}

impl IbvLib {
    fn load() -> Result<IbvLib, String> {
        let name = CString::new(LIBIBVERBS).expect("no NUL in the name");
        // SAFETY: `name` is NUL-terminated; loading runs the library's constructors, which is
        // what any verbs user does.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err(format!(
                "{LIBIBVERBS} cannot be loaded ({}); install rdma-core",
                dlerror_text()
            ));
        }
        macro_rules! f {
            ($name:literal, $ver:literal) => {{
                let p = sym(h, $name, $ver)?;
                // SAFETY: the symbol is the libibverbs function of that name and version,
                // whose C prototype (<infiniband/verbs.h>) the field's type spells out.
                unsafe { fn_from(p) }
            }};
        }
        let dmabuf = sym(h, "ibv_reg_dmabuf_mr", "IBVERBS_1.12").ok();
        Ok(IbvLib {
            get_device_list: f!("ibv_get_device_list", "IBVERBS_1.1"),
            free_device_list: f!("ibv_free_device_list", "IBVERBS_1.1"),
            get_device_name: f!("ibv_get_device_name", "IBVERBS_1.1"),
            open_device: f!("ibv_open_device", "IBVERBS_1.1"),
            close_device: f!("ibv_close_device", "IBVERBS_1.1"),
            query_port: f!("ibv_query_port", "IBVERBS_1.1"),
            query_gid: f!("ibv_query_gid", "IBVERBS_1.1"),
            alloc_pd: f!("ibv_alloc_pd", "IBVERBS_1.1"),
            dealloc_pd: f!("ibv_dealloc_pd", "IBVERBS_1.1"),
            reg_mr: f!("ibv_reg_mr", "IBVERBS_1.1"),
            dereg_mr: f!("ibv_dereg_mr", "IBVERBS_1.1"),
            create_cq: f!("ibv_create_cq", "IBVERBS_1.1"),
            destroy_cq: f!("ibv_destroy_cq", "IBVERBS_1.1"),
            create_qp: f!("ibv_create_qp", "IBVERBS_1.1"),
            modify_qp: f!("ibv_modify_qp", "IBVERBS_1.1"),
            query_qp: f!("ibv_query_qp", "IBVERBS_1.1"),
            destroy_qp: f!("ibv_destroy_qp", "IBVERBS_1.1"),
            create_comp_channel: f!("ibv_create_comp_channel", "IBVERBS_1.0"),
            destroy_comp_channel: f!("ibv_destroy_comp_channel", "IBVERBS_1.0"),
            get_cq_event: f!("ibv_get_cq_event", "IBVERBS_1.1"),
            ack_cq_events: f!("ibv_ack_cq_events", "IBVERBS_1.1"),
            // SAFETY: as for the others: `ibv_reg_dmabuf_mr`'s prototype.
            reg_dmabuf_mr: dmabuf.map(|p| unsafe { fn_from(p) }),
        })
    }

    /// The process's libibverbs, loaded on first use; the error says why it cannot be.
    pub fn get() -> Result<&'static IbvLib, String> {
        static LIB: OnceLock<Result<IbvLib, String>> = OnceLock::new();
        LIB.get_or_init(IbvLib::load).as_ref().map_err(Clone::clone)
    }
}

// SAFETY: the table holds only function pointers into a library that is never unloaded.
unsafe impl Send for IbvLib {}
// SAFETY: as above; the functions are thread-safe per libibverbs(7).
unsafe impl Sync for IbvLib {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_loads_or_says_why() {
        match IbvLib::get() {
            Ok(lib) => {
                // With rdma-core installed: listing devices works (none on this host).
                let mut n: c_int = -1;
                // SAFETY: `n` is a valid out-parameter; the list is freed below.
                let list = unsafe { (lib.get_device_list)(&mut n) };
                if !list.is_null() {
                    // SAFETY: `list` came from ibv_get_device_list.
                    unsafe { (lib.free_device_list)(list) };
                    assert!(n >= 0);
                }
                eprintln!("{LIBIBVERBS} loaded; {n} device(s)");
            }
            Err(e) => assert!(
                e.contains("cannot be loaded") || e.contains("has no"),
                "{e}"
            ),
        }
    }
}
