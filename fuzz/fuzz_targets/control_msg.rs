//! Control messages between engines (`dmsc_core::engine::control::ControlMsg::decode`): never
//! panics; what decodes re-encodes to the very same bytes, within the control frame limit.
#![no_main]

use dmsc_core::engine::control::ControlMsg;
use dmsc_core::wire::MAX_CONTROL;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = ControlMsg::decode(data) else {
        return;
    };
    let b = m.encode();
    assert!(b.len() <= MAX_CONTROL as usize);
    assert_eq!(ControlMsg::decode(&b).expect("a re-encoded message"), m);
    assert_eq!(b, data, "{m:?} re-encodes to other bytes");
});
