//! Frame headers of the data and control streams (`dmsc_core::wire::FrameHeader::decode`):
//! never panics; what decodes re-encodes to a header that decodes the same, with every field
//! byte unchanged.
#![no_main]

use dmsc_core::wire::{FrameHeader, HEADER_LEN, MAX_CHUNK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = FrameHeader::decode(data) else {
        return;
    };
    assert!(data.len() >= HEADER_LEN && h.len <= MAX_CHUNK);
    let mut b = [0u8; HEADER_LEN];
    h.encode(&mut b);
    assert_eq!(FrameHeader::decode(&b).expect("a re-encoded header"), h);
    // Magic, version, kind, call, flags and every integer field (bytes 10..12 are reserved).
    assert_eq!(b[..10], data[..10]);
    assert_eq!(b[12..56], data[12..56]);
    assert!(h.matches(&h));
});
