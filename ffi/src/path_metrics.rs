//! `dmscCommGetPathMetrics`: the per-path metrics of packet spraying (`DMSC_PATHS` > 1),
//! one `dmscPathMetrics_t` per peer and path, from `Communicator::path_metrics`.

use crate::args::out;
use crate::comm::{comm_arg, dmscComm_t};
use crate::guard::{guard, FfiError, Res};
use crate::result::dmscResult_t;
use dmsc_rs::{PathMetrics, PathState, PeerPaths};
use std::ffi::{c_char, c_int, c_uint};

/// Bytes of `dmscPathMetrics_t::lastFailure`, its terminating NUL included.
pub const DMSC_PATH_FAILURE_BYTES: usize = 128;

/// `dmscPathMetrics_t::state` of a path that carries data.
pub const DMSC_PATH_UP: c_int = 0;
/// `dmscPathMetrics_t::state` of a path that failed or is suspected; its data went to the
/// other paths, and it is connected again after a backoff.
pub const DMSC_PATH_DOWN: c_int = 1;

/// The metrics of one network path to one peer, filled by `dmscCommGetPathMetrics`.
///
/// Versioned by `size`: set `size` of the first element to `sizeof(dmscPathMetrics_t)`
/// before the call. dmsc writes elements of that size (and sets `size` in each); later
/// versions of libdmsc only append fields and keep accepting the sizes of earlier headers.
/// Plain data: copy it freely.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dmscPathMetrics_t {
    /// `sizeof(dmscPathMetrics_t)` of the header the caller was compiled with.
    pub size: usize,
    /// Rank of the peer, in the communicator.
    pub peer: c_int,
    /// Index of the path to that peer, `0 ... paths-1`.
    pub path: c_int,
    /// `DMSC_PATH_UP` (0) or `DMSC_PATH_DOWN` (1).
    pub state: c_int,
    /// Incarnation: how many times the path was connected, from 1.
    pub epoch: c_uint,
    /// Smoothed delivery rate in bytes per second (0 before the first measurement).
    pub rateBytesPerSec: f64,
    /// Smoothed round-trip time in seconds (0 before the first measurement).
    pub srttSeconds: f64,
    /// Payload bytes sent on the path and not yet acknowledged.
    pub inflightBytes: u64,
    /// Payload bytes handed to the path.
    pub bytesSent: u64,
    /// Payload bytes the peer reported having taken off the path.
    pub bytesAcked: u64,
    /// Payload bytes moved from this path to others when it failed.
    pub bytesRequeued: u64,
    /// Payload bytes the path carried as duplicates of slow tail chunks.
    pub bytesDuplicated: u64,
    /// Failures of the path so far.
    pub failures: c_uint,
    /// Time of the path's last state change, in seconds since the paths were set up (about
    /// 0 for a path that never changed state).
    pub lastChangeSeconds: f64,
    /// Why the path last failed, NUL-terminated UTF-8, truncated at a character boundary to
    /// fit; empty if it never failed.
    pub lastFailure: [c_char; DMSC_PATH_FAILURE_BYTES],
}

// The layout C callers compile against (x86-64 and aarch64 Linux): changing it changes
// the ABI, which `size` lets a later version keep accepting.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<dmscPathMetrics_t>() == 224);

/// `text` as a NUL-terminated C string of at most `DMSC_PATH_FAILURE_BYTES` bytes, cut at
/// a UTF-8 character boundary (interior NULs, which C cannot show, become spaces).
fn c_text(text: &str) -> [c_char; DMSC_PATH_FAILURE_BYTES] {
    let mut end = text.len().min(DMSC_PATH_FAILURE_BYTES - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut buf = [0; DMSC_PATH_FAILURE_BYTES];
    for (d, &b) in buf.iter_mut().zip(&text.as_bytes()[..end]) {
        *d = if b == 0 { b' ' } else { b } as c_char;
    }
    buf
}

/// The C entry of path `m` to `peer`.
fn entry(peer: usize, m: &PathMetrics) -> dmscPathMetrics_t {
    dmscPathMetrics_t {
        size: std::mem::size_of::<dmscPathMetrics_t>(),
        peer: c_int::try_from(peer).unwrap_or(c_int::MAX),
        path: c_int::try_from(m.path).unwrap_or(c_int::MAX),
        state: match m.state {
            PathState::Up => DMSC_PATH_UP,
            PathState::Down => DMSC_PATH_DOWN,
        },
        epoch: m.epoch,
        rateBytesPerSec: m.rate_bps,
        srttSeconds: m.srtt.as_secs_f64(),
        inflightBytes: m.inflight,
        bytesSent: m.bytes_sent,
        bytesAcked: m.bytes_acked,
        bytesRequeued: m.bytes_requeued,
        bytesDuplicated: m.bytes_duplicated,
        failures: m.failures,
        lastChangeSeconds: m.changes.last().map_or(0.0, |c| c.0.as_secs_f64()),
        lastFailure: c_text(&m.last_failure),
    }
}

/// One entry per peer and path, ordered by peer, then path.
fn entries(mut peers: Vec<PeerPaths>) -> Vec<dmscPathMetrics_t> {
    peers.sort_by_key(|p| p.peer);
    let mut v = Vec::new();
    for p in &mut peers {
        p.paths.sort_by_key(|m| m.path);
        v.extend(p.paths.iter().map(|m| entry(p.peer, m)));
    }
    v
}

/// The body of `dmscCommGetPathMetrics` once the communicator is found: check the other
/// arguments, then copy up to `capacity` of `all` to `out` and store `all.len()` in
/// `*count`.
///
/// # Safety
/// As `dmscCommGetPathMetrics`: `count` is NULL or writable; unless `capacity` is 0 or
/// negative, `out` is NULL or points to `capacity` writable elements whose first one's `size`
/// is readable.
unsafe fn fill(
    f: &str,
    all: &[dmscPathMetrics_t],
    out_arg: *mut dmscPathMetrics_t,
    capacity: c_int,
    count: *mut c_int,
) -> Res<()> {
    let count = out(f, "count", count)?;
    let capacity = usize::try_from(capacity)
        .map_err(|_| FfiError::invalid(f, format_args!("capacity {capacity} is negative")))?;
    let n = all.len().min(capacity);
    if capacity > 0 {
        let dst = out(f, "out", out_arg)?;
        let want = std::mem::size_of::<dmscPathMetrics_t>();
        // SAFETY: non-NULL, and with capacity > 0 the caller passes at least one element
        // whose `size` it set.
        let size = unsafe { std::ptr::addr_of!((*dst).size).read_unaligned() };
        if size != want {
            return Err(FfiError::invalid(
                f,
                format_args!(
                    "out[0].size is {size}, but this libdmsc's dmscPathMetrics_t has {want} \
                     bytes: set out[0].size = sizeof(dmscPathMetrics_t) with a matching dmsc.h"
                ),
            ));
        }
        for (i, e) in all[..n].iter().enumerate() {
            // SAFETY: i < n <= capacity, and the caller passes `capacity` writable elements
            // (written unaligned: C guarantees alignment, a wrong cast should not fault).
            unsafe { dst.add(i).write_unaligned(*e) };
        }
    }
    // SAFETY: non-NULL; the caller passes a writable int. Saturated: a C int counts them.
    unsafe { count.write(c_int::try_from(all.len()).unwrap_or(c_int::MAX)) };
    Ok(())
}

/// Store the metrics of `comm`'s network paths in `out[0] ... out[capacity-1]` and their
/// number in `*count`: one entry per peer and path, ordered by peer, then path. When there
/// are more than `capacity`, the first `capacity` are written and `*count` still says how
/// many there are, so a caller can ask with `capacity` 0 (and `out` NULL) first, then
/// allocate. Before a call with `capacity` > 0, set `out[0].size = sizeof(dmscPathMetrics_t)`.
///
/// The paths exist with packet spraying only (`DMSC_PATHS` > 1): with one path per peer
/// (the default) `*count` is 0. The metrics are a snapshot that the communicator's progress
/// thread refreshes every few milliseconds; reading them never waits for an operation.
///
/// Errors: `dmscInvalidArgument` if `comm` or `count` is NULL, `capacity` is negative, `out`
/// is NULL while `capacity` > 0, or `out[0].size` is not `sizeof(dmscPathMetrics_t)`;
/// `dmscInvalidUsage` if `comm` is not a live communicator.
/// Thread safety: callable from any thread, also while another thread runs an operation on
/// `comm`.
#[no_mangle]
pub unsafe extern "C" fn dmscCommGetPathMetrics(
    comm: dmscComm_t,
    out: *mut dmscPathMetrics_t,
    capacity: c_int,
    count: *mut c_int,
) -> dmscResult_t {
    const F: &str = "dmscCommGetPathMetrics";
    guard(F, || {
        let (_, c) = comm_arg(F, comm)?;
        let all = entries(c.path_metrics());
        // SAFETY: forwarded contract of this function (see `fill`).
        unsafe { fill(F, &all, out, capacity, count) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::dmscResult_t::dmscInvalidArgument;
    use std::time::Duration;

    fn metrics(path: usize, state: PathState, failure: &str) -> PathMetrics {
        PathMetrics {
            path,
            state,
            epoch: 2,
            rate_bps: 1.5e9,
            srtt: Duration::from_micros(250),
            inflight: 7,
            bytes_sent: 100,
            bytes_acked: 93,
            bytes_requeued: 4,
            bytes_duplicated: 5,
            failures: 1,
            suspicions: 0,
            last_failure: failure.to_string(),
            changes: vec![
                (Duration::ZERO, PathState::Up),
                (Duration::from_millis(1500), state),
            ],
        }
    }

    fn peer(peer: usize, paths: Vec<PathMetrics>) -> PeerPaths {
        PeerPaths {
            taken: std::time::SystemTime::now(),
            peer,
            paths,
            bytes_duplicated: 0,
            bytes_sent: 0,
        }
    }

    fn text(b: &[c_char]) -> String {
        let bytes: Vec<u8> = b
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8(bytes).expect("valid UTF-8")
    }

    #[test]
    fn entries_are_ordered_and_converted() {
        let all = entries(vec![
            peer(
                3,
                vec![
                    metrics(1, PathState::Down, "reset"),
                    metrics(0, PathState::Up, ""),
                ],
            ),
            peer(1, vec![metrics(0, PathState::Up, "")]),
        ]);
        let order: Vec<(c_int, c_int)> = all.iter().map(|e| (e.peer, e.path)).collect();
        assert_eq!(order, [(1, 0), (3, 0), (3, 1)]);
        let e = &all[2];
        assert_eq!((e.state, e.epoch, e.failures), (DMSC_PATH_DOWN, 2, 1));
        assert_eq!(all[0].state, DMSC_PATH_UP);
        assert_eq!((e.rateBytesPerSec, e.srttSeconds), (1.5e9, 250e-6));
        assert_eq!(
            (
                e.inflightBytes,
                e.bytesSent,
                e.bytesAcked,
                e.bytesRequeued,
                e.bytesDuplicated
            ),
            (7, 100, 93, 4, 5)
        );
        assert_eq!(e.lastChangeSeconds, 1.5);
        assert_eq!(text(&e.lastFailure), "reset");
        assert_eq!(text(&all[0].lastFailure), "");
        assert_eq!(e.size, std::mem::size_of::<dmscPathMetrics_t>());
    }

    #[test]
    fn failures_are_cut_at_a_character_boundary() {
        // 126 ASCII bytes, then a 2-byte character that does not fit before the NUL.
        let long = format!("{}é and more", "x".repeat(126));
        let t = c_text(&long);
        assert_eq!(t[DMSC_PATH_FAILURE_BYTES - 1], 0);
        assert_eq!(text(&t), "x".repeat(126));
        let t = c_text(&"é".repeat(100));
        assert_eq!(text(&t), "é".repeat(63));
        assert_eq!(text(&c_text("a\0b")), "a b");
    }

    #[test]
    fn capacity_limits_what_is_written_and_count_says_all() {
        let all = entries(vec![peer(
            0,
            vec![metrics(0, PathState::Up, ""), metrics(1, PathState::Up, "")],
        )]);
        let mut count = -1;
        // SAFETY: capacity 0: `out` is not touched; `count` is a local int.
        let r = unsafe { fill("f", &all, std::ptr::null_mut(), 0, &mut count) };
        assert_eq!((r, count), (Ok(()), 2));
        let mut buf = [entries(vec![peer(9, vec![metrics(5, PathState::Down, "")])])[0]; 3];
        // SAFETY: `buf` holds 3 writable elements; capacity 1 writes one.
        let r = unsafe { fill("f", &all, buf.as_mut_ptr(), 1, &mut count) };
        assert_eq!((r, count), (Ok(()), 2));
        assert_eq!((buf[0].peer, buf[0].path, buf[1].peer), (0, 0, 9));
        // SAFETY: as above, capacity 3 > 2 entries.
        let r = unsafe { fill("f", &all, buf.as_mut_ptr(), 3, &mut count) };
        assert_eq!((r, count), (Ok(()), 2));
        assert_eq!(
            (buf[1].path, buf[2].peer),
            (1, 9),
            "only `count` entries written"
        );
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let all = entries(vec![peer(0, vec![metrics(0, PathState::Up, "")])]);
        let mut buf = all.clone();
        let mut count = 0;
        let run = |out: *mut dmscPathMetrics_t, cap: c_int, count: *mut c_int| -> FfiError {
            // SAFETY: every pointer is NULL or valid for `cap` elements (checked first).
            unsafe { fill("dmscCommGetPathMetrics", &all, out, cap, count) }.unwrap_err()
        };
        let e = run(buf.as_mut_ptr(), 1, std::ptr::null_mut());
        assert_eq!(e.code, dmscInvalidArgument);
        assert_eq!(e.msg, "dmscCommGetPathMetrics: count is NULL");
        let e = run(buf.as_mut_ptr(), -1, &mut count);
        assert_eq!(e.msg, "dmscCommGetPathMetrics: capacity -1 is negative");
        let e = run(std::ptr::null_mut(), 2, &mut count);
        assert_eq!(e.msg, "dmscCommGetPathMetrics: out is NULL");
        buf[0].size = 8;
        let e = run(buf.as_mut_ptr(), 1, &mut count);
        assert!(e.msg.contains("out[0].size is 8"), "{}", e.msg);
        let r = guard("dmscCommGetPathMetrics", || {
            Err(run(buf.as_mut_ptr(), 1, &mut count))
        });
        assert_eq!(r, dmscInvalidArgument);
        // SAFETY: a NULL communicator is rejected before any pointer is used.
        let r = unsafe {
            dmscCommGetPathMetrics(std::ptr::null_mut(), buf.as_mut_ptr(), 1, &mut count)
        };
        assert_eq!(r, dmscInvalidArgument);
    }
}
