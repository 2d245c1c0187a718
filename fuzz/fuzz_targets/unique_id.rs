//! The 128-byte unique id and its hex form (`dmsc_core::bootstrap::UniqueId::from_bytes`,
//! `from_hex`): never panics; an accepted id re-encodes to exactly the bytes (or, lower-cased,
//! the hex digits) it came from.
#![no_main]

use dmsc_core::bootstrap::UniqueId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = UniqueId::from_bytes(data) {
        assert_eq!(id.to_bytes()[..], *data);
        assert_eq!(UniqueId::from_hex(&id.to_hex()).expect("its own hex"), id);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = UniqueId::from_hex(s) {
            assert_eq!(id.to_hex(), s.trim().to_ascii_lowercase());
        }
    }
});
