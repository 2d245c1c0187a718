//! Path units of packet spraying (`dmsc_core::spray::wire`): a unit header, then an ack
//! body. Neither decoder panics; what decodes re-encodes to the same bytes (a header), or to
//! an ack that decodes to the same value (an ack's encoding is canonical: same bytes).
#![no_main]

use dmsc_core::spray::wire::{Ack, UnitHeader, UNIT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = UnitHeader::decode(data) {
        let mut b = [0u8; UNIT_LEN];
        h.encode(&mut b);
        assert_eq!(&b[..], &data[..UNIT_LEN], "{h:?} re-encodes to other bytes");
    }
    if let Ok(a) = Ack::decode(data) {
        let b = a.encode();
        assert_eq!(b, data, "{a:?} re-encodes to other bytes");
        assert_eq!(Ack::decode(&b).expect("a re-encoded ack"), a);
    }
});
