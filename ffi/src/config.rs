//! `dmscConfig_t`: per-communicator settings, versioned like NCCL's `ncclConfig_t`
//! (`size`/`magic`/`version` header filled by `NCCL_CONFIG_INITIALIZER`, unset fields
//! marked `NCCL_CONFIG_UNDEF_INT` / `NCCL_CONFIG_UNDEF_PTR`). An unset field keeps the value
//! from the `DMSC_*` environment variables or the default; a set field overrides it.

use crate::guard::{Ctx, FfiError, Res};
use dmsc_rs::{Algo, Config};
use dmsc_transports::connect::Choice;
use std::ffi::{c_char, c_int, c_uint, CStr};
use std::time::Duration;

/// `magic` of a config made with `DMSC_CONFIG_INITIALIZER` ("dmsc" in ASCII).
pub const DMSC_CONFIG_MAGIC: c_uint = 0x646d_7363;

/// The value of an unset `int` field of `dmscConfig_t` (`INT_MIN`).
const UNDEF_INT: c_int = c_int::MIN;

/// Settings of a new communicator, for `dmscCommInitRankConfig`, `dmscCommInitFromEnv` and
/// `dmscCommSplit`. Always start from `DMSC_CONFIG_INITIALIZER`, which fills `size`,
/// `magic` and `version` and marks every other field unset, then set the fields you need:
///
/// ```c
/// dmscConfig_t config = DMSC_CONFIG_INITIALIZER;
/// config.timeoutMs = 60000;
/// ```
///
/// Unset fields (`DMSC_CONFIG_UNDEF_INT`, `DMSC_CONFIG_UNDEF_PTR`) take their value from the
/// `DMSC_*` environment variables, or the default. dmsc reads the struct only during the
/// call. Every rank of a communicator should pass the same settings.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dmscConfig_t {
    /// `sizeof(dmscConfig_t)` of the header the caller was compiled with.
    pub size: usize,
    /// `DMSC_CONFIG_MAGIC`.
    pub magic: c_uint,
    /// `DMSC_VERSION_CODE` of the header the caller was compiled with.
    pub version: c_uint,
    /// Deadline of setup and of every operation, in milliseconds (> 0; `DMSC_TIMEOUT`,
    /// default 300 s). An operation that passes it fails with `dmscTimeout`.
    pub timeoutMs: c_int,
    /// Number of network paths per peer, 1 ... 16 (`DMSC_PATHS`); 0: the default, one per
    /// interface `DMSC_SOCKET_IFNAME` names. More than one sprays chunks over the paths.
    /// Must be the same on every rank.
    pub nPaths: c_int,
    /// Largest chunk on the wire in bytes, 1 ... 64 MiB (`DMSC_CHUNK_BYTES`, default 512 KiB,
    /// 128 KiB over shared memory). Must be the same on every rank.
    pub chunkBytes: c_int,
    /// Chunks in flight per peer and direction, 1 ... 64 (`DMSC_WINDOW`, default 4).
    pub window: c_int,
    /// Transport, as `DMSC_TRANSPORT`: `"auto"` (shared memory within a host, RDMA or TCP
    /// between hosts), `"shm"`, `"tcp"`, `"rdma"`, or a TCP backend (`"uring"`, `"socket"`).
    pub transport: *const c_char,
    /// Network interface to listen on, in NCCL's syntax (`"eth"` prefix, `"=eth0"` exact,
    /// `"^docker"` exclude; `DMSC_SOCKET_IFNAME`). Not allowed for `dmscCommSplit` and
    /// `dmscCommShrink`: such a communicator listens on its parent's interface.
    pub socketIfname: *const c_char,
    /// All-reduce algorithm: `"ring"`, `"tree"`, `"rd"` (recursive doubling),
    /// `"rabenseifner"`, `"hier"` (hierarchical, across hosts) or `"hostring"` (the ring
    /// in host order) (`DMSC_ALGO`; default: chosen by the cost model).
    pub algo: *const c_char,
}

#[cfg(test)]
impl dmscConfig_t {
    /// What `DMSC_CONFIG_INITIALIZER` makes.
    pub(crate) const INITIALIZER: dmscConfig_t = dmscConfig_t {
        size: std::mem::size_of::<dmscConfig_t>(),
        magic: DMSC_CONFIG_MAGIC,
        version: crate::version::DMSC_VERSION_CODE as c_uint,
        timeoutMs: UNDEF_INT,
        nPaths: UNDEF_INT,
        chunkBytes: UNDEF_INT,
        window: UNDEF_INT,
        transport: std::ptr::null(),
        socketIfname: std::ptr::null(),
        algo: std::ptr::null(),
    };
}

/// What a communicator's settings start from before a config's set fields apply.
// Built once per new communicator and consumed at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Base {
    /// The `DMSC_*` environment variables (new communicators).
    Env,
    /// A parent's settings (`dmscCommSplit`).
    Parent(Config),
}

/// The settings for function `f`: `base`, overridden by the set fields of `*cfg` (NULL:
/// none).
///
/// # Safety
/// `cfg` is NULL or points to a readable `dmscConfig_t` whose string fields are NULL or
/// NUL-terminated strings.
pub(crate) unsafe fn resolve(f: &str, cfg: *const dmscConfig_t, base: Base) -> Res<Config> {
    let split = matches!(base, Base::Parent(_));
    let mut c = match base {
        Base::Env => Config::from_env().ctx(f)?,
        Base::Parent(p) => p,
    };
    if cfg.is_null() {
        return Ok(c);
    }
    // SAFETY: the caller passes a readable config; `magic` and `size` are read first so that
    // a struct of another layout is rejected before the rest is read.
    let (size, magic) = unsafe { ((*cfg).size, (*cfg).magic) };
    let want = std::mem::size_of::<dmscConfig_t>();
    if magic != DMSC_CONFIG_MAGIC {
        return Err(FfiError::invalid(
            f,
            format_args!(
                "config->magic is {magic:#x}, not DMSC_CONFIG_MAGIC ({DMSC_CONFIG_MAGIC:#x}): \
                 initialize the config with DMSC_CONFIG_INITIALIZER"
            ),
        ));
    }
    if size != want {
        return Err(FfiError::invalid(
            f,
            format_args!(
                "config->size is {size}, but this libdmsc's dmscConfig_t has {want} bytes: \
                 initialize the config with DMSC_CONFIG_INITIALIZER from a matching dmsc.h"
            ),
        ));
    }
    // SAFETY: magic and size say this is a dmscConfig_t of this layout.
    let cfg = unsafe { *cfg };
    apply_numbers(f, &cfg, &mut c)?;
    // SAFETY: forwarded contract: the string fields are NULL or NUL-terminated.
    let s = |p, name| unsafe { string(f, p, name) };
    if let Some(t) = s(cfg.transport, "transport")? {
        (c.transport, c.backend) = Choice::parse(t).map_err(|_| {
            FfiError::invalid(
                f,
                format_args!("config->transport \"{t}\" is not one of {}", Choice::NAMES),
            )
        })?;
    }
    if let Some(i) = s(cfg.socketIfname, "socketIfname")? {
        if split {
            return Err(FfiError::invalid(
                f,
                "config->socketIfname must be unset: a communicator made from another (split, \
                 shrink) listens on its parent's interface",
            ));
        }
        c.socket_ifname = Some(i.to_string());
    }
    if let Some(a) = s(cfg.algo, "algo")? {
        c.plan.algo = Some(Algo::parse(a).ok_or_else(|| {
            FfiError::invalid(
                f,
                format_args!("config->algo \"{a}\" is not one of {}", Algo::NAMES),
            )
        })?);
    }
    Ok(c)
}

/// Apply the set integer fields of `cfg` to `c`.
fn apply_numbers(f: &str, cfg: &dmscConfig_t, c: &mut Config) -> Res<()> {
    let bad = |name: &str, v: c_int, why: &str| {
        FfiError::invalid(f, format_args!("config->{name} = {v}: {why}"))
    };
    if cfg.timeoutMs != UNDEF_INT {
        if cfg.timeoutMs <= 0 {
            return Err(bad("timeoutMs", cfg.timeoutMs, "must be positive"));
        }
        c.engine.timeout = Duration::from_millis(cfg.timeoutMs as u64);
    }
    match cfg.nPaths {
        UNDEF_INT | 0 => {}
        n if (1..=dmsc_core::spray::wire::MAX_PATHS as c_int).contains(&n) => {
            c.paths = Some(n as usize)
        }
        n => {
            return Err(bad(
                "nPaths",
                n,
                "must be 0 (default) or a number of paths in 1 ... 16",
            ))
        }
    }
    if cfg.chunkBytes != UNDEF_INT {
        let max = dmsc_core::wire::MAX_CHUNK as c_int;
        if !(1..=max).contains(&cfg.chunkBytes) {
            return Err(bad(
                "chunkBytes",
                cfg.chunkBytes,
                &format!("must be in 1 ... {max}"),
            ));
        }
        c.engine.chunk_bytes = cfg.chunkBytes as usize;
        c.chunk_set = true;
    }
    if cfg.window != UNDEF_INT {
        if !(1..=64).contains(&cfg.window) {
            return Err(bad("window", cfg.window, "must be in 1 ... 64"));
        }
        c.engine.window = cfg.window as usize;
    }
    Ok(())
}

/// The string field `name`, or `None` when unset (NULL).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn string<'a>(f: &str, p: *const c_char, name: &str) -> Res<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(Some)
        .map_err(|_| FfiError::invalid(f, format_args!("config->{name} is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::dmscResult_t::dmscInvalidArgument;

    fn run(cfg: &dmscConfig_t) -> Res<Config> {
        // SAFETY: a valid config whose strings are NULL or C string literals.
        unsafe {
            resolve(
                "dmscCommInitRankConfig",
                cfg,
                Base::Parent(Config::default()),
            )
        }
    }

    #[test]
    fn unset_fields_keep_the_base() {
        let c = run(&dmscConfig_t::INITIALIZER).unwrap();
        let d = Config::default();
        assert_eq!(c.engine.timeout, d.engine.timeout);
        assert_eq!(c.engine.chunk_bytes, d.engine.chunk_bytes);
        assert_eq!(c.plan.algo, None);
        // SAFETY: NULL config.
        let c = unsafe { resolve("f", std::ptr::null(), Base::Parent(d.clone())) }.unwrap();
        assert_eq!(c.engine.window, d.engine.window);
    }

    #[test]
    fn set_fields_override() {
        let cfg = dmscConfig_t {
            timeoutMs: 1500,
            nPaths: 1,
            chunkBytes: 4096,
            window: 2,
            transport: c"socket".as_ptr(),
            algo: c"tree".as_ptr(),
            ..dmscConfig_t::INITIALIZER
        };
        let c = run(&cfg).unwrap();
        assert_eq!(c.engine.timeout, Duration::from_millis(1500));
        assert_eq!((c.engine.chunk_bytes, c.engine.window), (4096, 2));
        assert!(matches!(c.backend, dmsc_transports::tcp::Backend::Socket));
        assert_eq!(c.plan.algo, Some(Algo::Tree));
        let cfg = dmscConfig_t {
            socketIfname: c"=lo".as_ptr(),
            ..dmscConfig_t::INITIALIZER
        };
        // SAFETY: a valid config.
        let c = unsafe { resolve("f", &cfg, Base::Env) }.unwrap();
        assert_eq!(c.socket_ifname.as_deref(), Some("=lo"));
    }

    #[test]
    fn bad_fields_name_themselves() {
        let i = dmscConfig_t::INITIALIZER;
        let cases = [
            (dmscConfig_t { magic: 0, ..i }, "config->magic"),
            (dmscConfig_t { size: 8, ..i }, "config->size"),
            (dmscConfig_t { timeoutMs: 0, ..i }, "config->timeoutMs"),
            (dmscConfig_t { nPaths: 17, ..i }, "1 ... 16"),
            (dmscConfig_t { nPaths: -3, ..i }, "config->nPaths"),
            (dmscConfig_t { chunkBytes: 0, ..i }, "config->chunkBytes"),
            (dmscConfig_t { window: 65, ..i }, "config->window"),
            (
                dmscConfig_t {
                    transport: c"carrier-pigeon".as_ptr(),
                    ..i
                },
                "config->transport",
            ),
            (
                dmscConfig_t {
                    algo: c"star".as_ptr(),
                    ..i
                },
                "config->algo",
            ),
            (
                dmscConfig_t {
                    socketIfname: c"eth".as_ptr(),
                    ..i
                },
                "config->socketIfname",
            ),
        ];
        for (cfg, want) in cases {
            let e = run(&cfg).unwrap_err();
            assert_eq!(e.code, dmscInvalidArgument);
            assert!(e.msg.contains(want), "{} lacks {want}", e.msg);
        }
    }
}
