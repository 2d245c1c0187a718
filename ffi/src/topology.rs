//! The topology of a communicator in C: `dmscCommHostCount`, `dmscCommHostOf`,
//! `dmscCommHostName` and `dmscCommLink`, from `Communicator::topology`. No NCCL equivalent
//! (NCCL keeps its topology internal and prints it with `NCCL_DEBUG=INFO`).

use crate::args::out;
use crate::comm::{comm_arg, dmscComm_t};
use crate::guard::{guard, FfiError, Res};
use crate::result::dmscResult_t;
use dmsc_rs::Topology;
use std::ffi::{c_char, c_int};

/// `host` as an index into `t`'s hosts, or an error naming it.
fn host_arg(f: &str, t: &Topology, what: &str, host: c_int) -> Res<usize> {
    usize::try_from(host)
        .ok()
        .filter(|&h| h < t.nhosts())
        .ok_or_else(|| {
            FfiError::invalid(
                f,
                format_args!(
                    "{what} {host} is not a host of this {}-host communicator",
                    t.nhosts()
                ),
            )
        })
}

/// Store the number of hosts the ranks of `comm` run on in `*count` (ranks share a host
/// when they share a kernel, an IPC and a network namespace).
///
/// Errors: `dmscInvalidArgument` if `comm` or `count` is NULL; `dmscInvalidUsage` if `comm`
/// is not a live communicator.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommHostCount(comm: dmscComm_t, count: *mut c_int) -> dmscResult_t {
    const F: &str = "dmscCommHostCount";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let count = out(F, "count", count)?;
        // SAFETY: non-NULL; the caller passes a writable int. Hosts are at most the ranks,
        // which are ints in C.
        unsafe { count.write(c.topology().nhosts() as c_int) };
        Ok(())
    })
}

/// Store the host of rank `rank` in `*host`, `0 ... hostCount-1` (host 0 is rank 0's; hosts
/// are numbered in the order of their first rank).
///
/// Errors: `dmscInvalidArgument` if `comm` or `host` is NULL or `rank` is out of range;
/// `dmscInvalidUsage` if `comm` is not a live communicator.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommHostOf(
    comm: dmscComm_t,
    rank: c_int,
    host: *mut c_int,
) -> dmscResult_t {
    const F: &str = "dmscCommHostOf";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let host = out(F, "host", host)?;
        let t = c.topology();
        let r = usize::try_from(rank)
            .ok()
            .filter(|&r| r < t.nranks())
            .ok_or_else(|| {
                FfiError::invalid(
                    F,
                    format_args!(
                        "rank {rank} is not a rank of this {}-rank communicator",
                        t.nranks()
                    ),
                )
            })?;
        // SAFETY: non-NULL; the caller passes a writable int.
        unsafe { host.write(t.host_of(r) as c_int) };
        Ok(())
    })
}

/// Copy the name of host `host` (its `hostname`), NUL-terminated, into `buf` of `len`
/// bytes.
///
/// Errors: `dmscInvalidArgument` if `comm` or `buf` is NULL, `host` is out of range, or
/// `len` is too small for the name and its NUL (nothing is written then);
/// `dmscInvalidUsage` if `comm` is not a live communicator.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommHostName(
    comm: dmscComm_t,
    host: c_int,
    buf: *mut c_char,
    len: usize,
) -> dmscResult_t {
    const F: &str = "dmscCommHostName";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let buf = out(F, "buf", buf)?;
        let t = c.topology();
        let h = host_arg(F, t, "host", host)?;
        let name = t.host_name(h).as_bytes();
        if name.len() >= len {
            return Err(FfiError::invalid(
                F,
                format_args!(
                    "len {len} is too small for host {h}'s name of {} bytes and its NUL",
                    name.len()
                ),
            ));
        }
        // SAFETY: non-NULL; the caller passes `len` writable bytes, and name.len() + 1 <= len.
        // The name is a Rust string with no interior NUL (host names from the kernel).
        unsafe {
            std::ptr::copy_nonoverlapping(name.as_ptr().cast::<c_char>(), buf, name.len());
            buf.add(name.len()).write(0);
        }
        Ok(())
    })
}

/// Store the measured figures of the link from host `hostA` to host `hostB` (`hostA ==
/// hostB`: between ranks of that host): one-way latency of a small message in
/// `*latencyUs` (microseconds) and bandwidth in one direction while both ends send in
/// `*bandwidthGBs` (1e9 bytes per second). Both are NaN when the link was not measured:
/// the communicator runs on one host, `DMSC_TOPO_PROBE=0`, the host has a single rank, or
/// the pair was not in the probe's sample (above 8 hosts only neighbours are measured).
///
/// Errors: `dmscInvalidArgument` if `comm`, `latencyUs` or `bandwidthGBs` is NULL or a host
/// is out of range; `dmscInvalidUsage` if `comm` is not a live communicator.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommLink(
    comm: dmscComm_t,
    hostA: c_int,
    hostB: c_int,
    latencyUs: *mut f64,
    bandwidthGBs: *mut f64,
) -> dmscResult_t {
    const F: &str = "dmscCommLink";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let lat = out(F, "latencyUs", latencyUs)?;
        let bw = out(F, "bandwidthGBs", bandwidthGBs)?;
        let t = c.topology();
        let a = host_arg(F, t, "hostA", hostA)?;
        let b = host_arg(F, t, "hostB", hostB)?;
        let link = t
            .link(a, b)
            .map_err(|e| FfiError::invalid(F, format_args!("{e}")))?;
        let (l, g) = link.map_or((f64::NAN, f64::NAN), |l| {
            (l.latency_s * 1e6, l.bytes_per_s / 1e9)
        });
        // SAFETY: both non-NULL; the caller passes writable doubles.
        unsafe {
            lat.write(l);
            bw.write(g);
        }
        Ok(())
    })
}
