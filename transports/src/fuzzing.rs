//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not a stable API).
//!
//! They reach what is private to this crate: the memory-attach handshake record, the mesh
//! hello check and the per-connection framing state machine. Each takes arbitrary bytes,
//! must never panic on them, and asserts the properties that make a decoder right rather than
//! merely crash-free: what decodes re-encodes to the same bytes, and what a connection
//! delivers is exactly what the byte stream carried. Run them through `scripts/fuzz.sh`
//! (libFuzzer, as set up by cargo-fuzz).

use crate::cma::handshake::{Record, RECORD_LEN};
use crate::conn::{Conn, Role};
use crate::tcp::hello::parse_hello;
use crate::tcp::{Backend, MeshOptions};
use dmsc_core::engine::Completion;
use dmsc_core::wire::{FrameHeader, FrameKind, HEADER_LEN};
use std::os::fd::OwnedFd;

/// Largest payload a fuzzed receive posts: keeps each run's memory small.
const MAX_FUZZ_PAYLOAD: u32 = 1 << 20;

/// The memory-attach handshake record ([`Record::decode`]): exactly [`RECORD_LEN`] bytes
/// decode or fail; what decodes re-encodes to the same bytes.
pub fn cma_record(data: &[u8]) {
    let Ok(b) = <&[u8; RECORD_LEN]>::try_from(data) else {
        return;
    };
    if let Ok(r) = Record::decode(b) {
        assert_eq!(&r.encode(), b, "{r:?} re-encodes to other bytes");
    }
}

/// The mesh hello check. Input: this rank (u16 LE), the world size (u16 LE), the
/// communicator id (u64 LE), then the bytes that arrived. An accepted hello names a higher
/// rank inside the world, and the hello that rank would send is accepted the same way.
pub fn mesh_hello(data: &[u8]) {
    if data.len() < 12 {
        return;
    }
    let rank = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let nranks = usize::from(u16::from_le_bytes([data[2], data[3]]));
    let mut id = [0u8; 8];
    id.copy_from_slice(&data[4..12]);
    let comm_id = u64::from_le_bytes(id);
    let Ok((peer, role)) = parse_hello(&data[12..], rank, nranks, comm_id) else {
        return;
    };
    assert!(
        rank < peer && peer < nranks,
        "accepted rank {peer} of {nranks}"
    );
    let opts = MeshOptions {
        rank: peer,
        nranks,
        bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        timeout: std::time::Duration::ZERO,
        backend: Backend::Socket,
        comm_id,
        cma: false,
        secret: None,
        paths: 1,
        path_ips: Vec::new(),
        spray: Default::default(),
        serve: None,
    };
    let again = crate::tcp::hello::hello(&opts, role);
    assert_eq!(
        parse_hello(&again, rank, nranks, comm_id).ok(),
        Some((peer, role))
    );
}

/// xorshift64: the read sizes a fuzz input asks for.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The per-connection framing state machine fed a hostile byte stream, as the kernel would
/// deliver it. Input: a flags byte (bit 0: control connection; bits 1-2: how many data
/// receives to post; bits 3-7: seed of the read sizes), for a data connection that many
/// 64-byte headers the receives expect, then the stream. Checks that every completion
/// reports exactly the frame the stream carried at that point, in order, and that a
/// connection never reads more than its receives asked for.
pub fn conn_stream(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Data
    } else {
        Role::Control
    };
    let mut expects = Vec::new();
    if role == Role::Data {
        for _ in 0..(flags >> 1) & 3 {
            if rest.len() < HEADER_LEN {
                return;
            }
            let (h, r) = rest.split_at(HEADER_LEN);
            rest = r;
            match FrameHeader::decode(h) {
                Ok(h) if h.len <= MAX_FUZZ_PAYLOAD => expects.push(h),
                _ => return,
            }
        }
    }
    let stream = rest;
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    let mut conn = Conn::new(OwnedFd::from(null), 1, role);
    let mut bufs: Vec<Vec<u8>> = expects.iter().map(|h| vec![0; h.len as usize]).collect();
    for (i, (h, b)) in expects.iter().zip(bufs.iter_mut()).enumerate() {
        conn.push_recv(h, b.as_mut_ptr(), i as u64);
    }

    let mut rng = u64::from(flags >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut at = 0; // stream bytes delivered to the connection
    let mut parsed = 0; // stream bytes accounted for by completions
    let mut next_recv = 0; // the receive the next data completion must be for
    let mut out = Vec::new();
    loop {
        let (ready, _) = conn.prepare_recv();
        if !ready {
            break;
        }
        let left = &stream[at..];
        if left.is_empty() {
            conn.on_received(0, &mut out, &mut crate::conn::NoPaths);
        } else {
            let r = next(&mut rng);
            let budget = if r & 1 == 0 {
                1 + (r >> 1) as usize % 8
            } else {
                1 + (r >> 1) as usize % 9000
            }
            .min(left.len());
            // `msg_iovlen` is a `usize` in glibc but an `int` in musl.
            #[allow(clippy::unnecessary_cast)]
            let iovs = &conn.recv_iov[..conn.recv_msg.msg_iovlen as usize];
            let iovs = iovs.to_vec();
            let mut n = 0;
            for iov in &iovs {
                let k = iov.iov_len.min(budget - n);
                // SAFETY: what recvmsg would do: the connection lent `iov_len` writable bytes
                // at `iov_base` (its header buffer, control buffer, or a receive's buffer).
                unsafe {
                    std::ptr::copy_nonoverlapping(left[n..].as_ptr(), iov.iov_base.cast(), k)
                };
                n += k;
            }
            assert!(n > 0, "a ready connection offered no room");
            at += n;
            conn.on_received(n, &mut out, &mut crate::conn::NoPaths);
        }
        for c in out.drain(..) {
            check(c, stream, &mut parsed, &mut next_recv, &expects, &bufs);
        }
        assert!(parsed <= at, "completed {parsed} bytes of {at} received");
        if left.is_empty() {
            // End of stream: the connection either finished cleanly or failed.
            assert!(!conn.wants_recv());
            break;
        }
    }
    // Cancelling in any state leaves a consistent connection.
    conn.clear();
    let _ = conn.prepare_recv();
}

/// One completion of [`conn_stream`] against the stream it came from.
fn check(
    c: Completion,
    stream: &[u8],
    parsed: &mut usize,
    next_recv: &mut usize,
    expects: &[FrameHeader],
    bufs: &[Vec<u8>],
) {
    let header = || FrameHeader::decode(&stream[*parsed..]).expect("a completed frame's header");
    match c {
        Completion::Control { payload, .. } => {
            let h = header();
            assert_eq!(h.kind, FrameKind::Control);
            let body = &stream[*parsed + HEADER_LEN..][..h.len as usize];
            assert_eq!(payload, body, "control payload differs from the stream");
            *parsed += HEADER_LEN + h.len as usize;
        }
        Completion::Received { token, .. } => {
            let h = header();
            assert_eq!(token, *next_recv as u64, "receives completed out of order");
            assert!(h.matches(&expects[*next_recv]), "{h:?} completed a receive");
            let body = &stream[*parsed + HEADER_LEN..][..h.len as usize];
            assert_eq!(bufs[*next_recv], body, "payload differs from the stream");
            *parsed += HEADER_LEN + h.len as usize;
            *next_recv += 1;
        }
        Completion::BadHeader { token, got, .. } => {
            assert_eq!(token, *next_recv as u64);
            assert_eq!(got, header(), "reported header differs from the stream");
            assert!(
                !got.matches(&expects[*next_recv]),
                "a matching header refused"
            );
        }
        Completion::Sent { token } => panic!("a receive completed send {token}"),
        // A failure, or whatever else the connection reports: nothing to check.
        _ => {}
    }
}

/// Seed inputs for this module's targets (`cma_record`, `mesh_hello`, `conn_stream`): a few
/// valid encodings and a few broken ones, by name. `fuzz/gen_corpus.rs` writes them to
/// `fuzz/corpus/<target>/`.
pub fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "cma_record" => {
            let r = Record {
                willing: true,
                pid: 4242,
                probe_addr: 0x7ffd_1234_5678,
                probe_value: 0x0123_4567_89ab_cdef,
                epoch_addr: 0x5555_0000_1000,
            };
            let mut bad_flags = r.encode();
            bad_flags[4] = 2;
            vec![
                ("willing", r.encode().to_vec()),
                (
                    "unwilling",
                    Record {
                        willing: false,
                        ..r
                    }
                    .encode()
                    .to_vec(),
                ),
                ("bad-flags", bad_flags.to_vec()),
                ("short", r.encode()[..20].to_vec()),
            ]
        }
        "mesh_hello" => {
            let comm_id = 0x00c0_ffee_d00d_u64;
            let at = |rank: u16, nranks: u16, hello: &[u8]| {
                let mut v = rank.to_le_bytes().to_vec();
                v.extend_from_slice(&nranks.to_le_bytes());
                v.extend_from_slice(&comm_id.to_le_bytes());
                v.extend_from_slice(hello);
                v
            };
            let opts = |rank| MeshOptions {
                rank,
                nranks: 4,
                bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
                timeout: std::time::Duration::ZERO,
                backend: Backend::Socket,
                comm_id,
                cma: false,
                secret: None,
                paths: 1,
                path_ips: Vec::new(),
                spray: Default::default(),
                serve: None,
            };
            let data = crate::tcp::hello::hello(&opts(2), Role::Data);
            let control = crate::tcp::hello::hello(&opts(3), Role::Control);
            vec![
                ("data-from-2", at(0, 4, &data)),
                ("control-from-3", at(1, 4, &control)),
                ("lower-rank", at(3, 4, &data)),
                ("truncated", at(0, 4, &data[..40])),
            ]
        }
        "conn_stream" => conn_seeds(),
        _ => Vec::new(),
    }
}

/// A frame: header and payload.
fn frame(h: &FrameHeader, payload: &[u8]) -> Vec<u8> {
    let mut b = [0u8; HEADER_LEN];
    h.encode(&mut b);
    let mut v = b.to_vec();
    v.extend_from_slice(payload);
    v
}

fn conn_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use dmsc_core::engine::control::{ControlMsg, ErrorClass};
    use dmsc_core::types::{CollDesc, CollKind, DataType, ReduceOp};
    let data = |len: u32, chunk: u32| FrameHeader {
        kind: FrameKind::Data,
        seq: 7,
        desc: CollDesc {
            kind: CollKind::AllReduce,
            count: 4096,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
        },
        msg: 1,
        chunk,
        offset: u64::from(chunk) * 1024,
        len,
        aux: 0,
        crc: None,
    };
    // Flags byte: bit 0 control, bits 1-2 receives posted, bits 3-7 read-size seed.
    let posted = |n: u8, seed: u8, expects: &[FrameHeader], stream: &[u8]| {
        let mut v = vec![(seed << 3) | (n << 1)];
        for h in expects {
            let mut b = [0u8; HEADER_LEN];
            h.encode(&mut b);
            v.extend_from_slice(&b);
        }
        v.extend_from_slice(stream);
        v
    };
    let small: Vec<u8> = (0..100u8).collect();
    let large: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let two = [frame(&data(100, 0), &small), frame(&data(5000, 1), &large)].concat();
    let failed = ControlMsg::Failed {
        seq: 3,
        class: ErrorClass::Mismatch,
        ranks: vec![0, 2],
        text: "count 4 vs 5".into(),
    }
    .encode();
    let control = |p: &[u8]| {
        frame(
            &FrameHeader::plain(FrameKind::Control, 0, p.len() as u32),
            p,
        )
    };
    let controls = [control(&failed), control(&ControlMsg::StatusQuery.encode())].concat();
    let mut ctrl_seed = vec![1u8 | (5 << 3)];
    ctrl_seed.extend_from_slice(&controls);
    vec![
        (
            "data-two-frames",
            posted(2, 3, &[data(100, 0), data(5000, 1)], &two),
        ),
        (
            "data-crc",
            posted(
                1,
                9,
                &[FrameHeader {
                    crc: Some(0),
                    ..data(100, 0)
                }],
                &frame(
                    &FrameHeader {
                        crc: Some(0x1234_5678),
                        ..data(100, 0)
                    },
                    &small,
                ),
            ),
        ),
        (
            "data-mismatch",
            posted(1, 1, &[data(100, 0)], &frame(&data(100, 5), &small)),
        ),
        (
            "data-truncated",
            posted(1, 2, &[data(5000, 1)], &two[100 + HEADER_LEN..3000]),
        ),
        ("control-two", ctrl_seed),
        ("control-on-data", posted(1, 4, &[data(100, 0)], &controls)),
    ]
}
