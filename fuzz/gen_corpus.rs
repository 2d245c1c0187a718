//! Writes the seed corpus `fuzz/corpus/<target>/`: a few valid encodings per decoder, made
//! by the real encoders, and a few broken ones. Run from the repository root after a change
//! of a wire format:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//! ```

use dmsc_core::auth::{Handshake, Message, Purpose, Refusal, Secret, Side};
use dmsc_core::bootstrap::protocol::{Request, Response};
use dmsc_core::bootstrap::UniqueId;
use dmsc_core::engine::control::{ControlMsg, ErrorClass};
use dmsc_core::types::{CollDesc, CollKind, DataType, ReduceOp};
use dmsc_core::wire::{FrameHeader, FrameKind, HEADER_LEN};
use std::path::Path;

/// Named seed inputs of one target.
type Seeds = Vec<(&'static str, Vec<u8>)>;

fn header(h: &FrameHeader) -> Vec<u8> {
    let mut b = [0u8; HEADER_LEN];
    h.encode(&mut b);
    b.to_vec()
}

fn frame_headers() -> Seeds {
    let data = FrameHeader {
        kind: FrameKind::Data,
        seq: 12,
        desc: CollDesc {
            kind: CollKind::ReduceScatter,
            count: 1 << 20,
            dtype: DataType::Bfloat16,
            op: ReduceOp::Max,
            root: 0,
        },
        msg: 3,
        chunk: 2,
        offset: 1 << 19,
        len: 1 << 18,
        aux: 0,
        crc: None,
    };
    let mut bad_magic = header(&data);
    bad_magic[0] = b'X';
    vec![
        ("data", header(&data)),
        (
            "data-crc",
            header(&FrameHeader {
                crc: Some(0xdead_beef),
                ..data
            }),
        ),
        (
            "dataref",
            header(&FrameHeader {
                kind: FrameKind::Transport(0x81),
                len: 32,
                ..data
            }),
        ),
        (
            "control",
            header(&FrameHeader::plain(FrameKind::Control, 0, 100)),
        ),
        ("hello", header(&FrameHeader::plain(FrameKind::Transport(0x80), 3, 0))),
        ("bad-magic", bad_magic),
        ("truncated", header(&data)[..63].to_vec()),
    ]
}

fn control_msgs() -> Seeds {
    let failed = ControlMsg::Failed {
        seq: 9,
        class: ErrorClass::Mismatch,
        ranks: vec![1, 3],
        text: "count 4 vs 5".into(),
    }
    .encode();
    vec![
        ("failed", failed.clone()),
        (
            "aborted",
            ControlMsg::Failed {
                seq: 2,
                class: ErrorClass::Aborted,
                ranks: vec![],
                text: String::new(),
            }
            .encode(),
        ),
        ("status-query", ControlMsg::StatusQuery.encode()),
        ("heartbeat", ControlMsg::Heartbeat.encode()),
        ("bye", ControlMsg::Bye.encode()),
        (
            "peer-lost",
            ControlMsg::Failed {
                seq: 3,
                class: ErrorClass::PeerLost,
                ranks: vec![2],
                text: "no message for 812 ms".into(),
            }
            .encode(),
        ),
        (
            "status",
            ControlMsg::Status {
                started: 5,
                completed: 4,
                current: Some(CollDesc {
                    kind: CollKind::Broadcast,
                    count: 77,
                    dtype: DataType::Float16,
                    op: ReduceOp::Sum,
                    root: 2,
                }),
            }
            .encode(),
        ),
        (
            "status-idle",
            ControlMsg::Status {
                started: 1,
                completed: 1,
                current: None,
            }
            .encode(),
        ),
        ("truncated", failed[..failed.len() - 3].to_vec()),
        ("unknown-type", vec![0x7f, 0, 0]),
    ]
}

fn store_requests() -> Seeds {
    let e = |r: Request| r.encode().expect("a seed request");
    let set = e(Request::Set {
        key: "rank/0/addr".into(),
        value: b"10.0.0.1:4000".to_vec(),
    });
    vec![
        ("set", set.clone()),
        (
            "get",
            e(Request::Get {
                key: "k\u{e9}y".into(),
                timeout_ms: 30_000,
            }),
        ),
        (
            "add",
            e(Request::Add {
                key: "barrier".into(),
                delta: -1,
            }),
        ),
        (
            "check",
            e(Request::Check {
                keys: vec!["a".into(), "b".into()],
            }),
        ),
        (
            "wait",
            e(Request::Wait {
                keys: vec!["x".into()],
                timeout_ms: 5,
            }),
        ),
        ("delete", e(Request::Delete { key: "d".into() })),
        ("two-frames", [set.clone(), set.clone()].concat()),
        ("huge-length", b"DMSS\x01\x01\xff\xff\xff\x7f".to_vec()),
        ("truncated", set[..set.len() - 4].to_vec()),
        ("http", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ]
}

fn store_responses() -> Seeds {
    let e = |r: Response| r.encode().expect("a seed response");
    let value = e(Response::Value(vec![1, 2, 3, 4]));
    vec![
        ("ok", e(Response::Ok)),
        ("value", value.clone()),
        ("counter", e(Response::Counter(i64::MIN))),
        ("bool", e(Response::Bool(true))),
        (
            "timeout",
            e(Response::Timeout {
                missing: vec!["p/3".into(), "p/4".into()],
            }),
        ),
        ("error", e(Response::Error("no such thing".into()))),
        ("huge-length", b"DMSS\x01\x82\x00\x00\x00\x40".to_vec()),
        ("truncated", value[..value.len() - 1].to_vec()),
    ]
}

fn unique_ids() -> Seeds {
    let v4 = UniqueId::new("10.1.2.3:29500".parse().unwrap(), 0xdead_beef, [7; 32]).unwrap();
    let v6 = UniqueId::new("[fe80::1%3]:1".parse().unwrap(), u64::MAX, [0xa5; 32]).unwrap();
    let mut corrupt = v4.to_bytes();
    corrupt[9] ^= 1;
    vec![
        ("ipv4", v4.to_bytes().to_vec()),
        ("ipv6", v6.to_bytes().to_vec()),
        ("hex", v4.to_hex().into_bytes()),
        ("hex-upper", v6.to_hex().to_uppercase().into_bytes()),
        ("corrupt", corrupt.to_vec()),
        ("short", v4.to_bytes()[..100].to_vec()),
    ]
}

/// Seeds of `auth_msg`: flags byte (bit 0: the fuzzed end has the secret; bit 1: it is the
/// connector), the peer's challenge, the peer's proof; as in `fuzz_targets/auth_msg.rs`.
fn auth_msgs() -> Seeds {
    let secret = Secret::new(b"the fuzzer's job secret").unwrap();
    let me = Handshake::new(
        Some(&secret),
        Purpose::Mesh,
        Side::Acceptor,
        0xc0ffee,
        [0x5a; 32],
    );
    let mut peer = Handshake::new(
        Some(&secret),
        Purpose::Mesh,
        Side::Connector,
        0xc0ffee,
        [9; 32],
    );
    let proof = peer.on_challenge(&me.challenge()).unwrap().unwrap();
    let genuine = [&[1u8][..], &peer.challenge(), &proof].concat();
    let mut forged = genuine.clone();
    forged[50] ^= 1;
    let bare = Handshake::new(None, Purpose::Mesh, Side::Acceptor, 0, [3; 32]);
    vec![
        ("genuine", genuine),
        ("forged-proof", forged),
        ("no-secret", [&[0u8][..], &bare.challenge()].concat()),
        (
            "refused",
            [
                &[3u8][..],
                &Message::Refused(Refusal::TooManyPending(128)).encode(),
            ]
            .concat(),
        ),
        ("store-frame", b"\x01DMSS\x01\x01\x00\x00\x00\x00".to_vec()),
    ]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut sets = vec![
        ("frame_header", frame_headers()),
        ("control_msg", control_msgs()),
        ("store_request", store_requests()),
        ("store_response", store_responses()),
        ("unique_id", unique_ids()),
        ("auth_msg", auth_msgs()),
    ];
    for t in ["cma_record", "mesh_hello", "conn_stream"] {
        sets.push((t, dmsc_transports::fuzzing::seeds(t)));
    }
    for (target, seeds) in sets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("creating the corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("writing a seed");
        }
        println!("{target}: seeds in {}", dir.display());
    }
}
