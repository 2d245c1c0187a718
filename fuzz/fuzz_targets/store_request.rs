//! Requests of the rendezvous store protocol (`dmsc_core::bootstrap::protocol::Request::decode`,
//! fed whatever bytes have arrived): never panics; a whole frame decodes to a message that
//! re-encodes to exactly that frame, every shorter prefix of it asks for more bytes, and
//! `frame_len` agrees with the decoder.
#![no_main]

use dmsc_core::bootstrap::protocol::{frame_len, Request, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Request::decode(data) {
        Ok(Some((m, used))) => {
            assert!(used <= data.len() && used <= MAX_FRAME_LEN);
            let frame = &data[..used];
            assert_eq!(m.encode().expect("a decoded message encodes"), frame);
            assert_eq!(frame_len(data, true).expect("frame_len"), Some(used));
            assert_eq!(Request::decode(&frame[..used - 1]).expect("a prefix"), None);
        }
        Ok(None) => match frame_len(data, true) {
            Ok(Some(n)) => assert!(n > data.len(), "whole frame of {n} bytes not decoded"),
            Ok(None) => {}
            Err(e) => panic!("frame_len refused what decode waits for: {e}"),
        },
        Err(_) => {}
    }
});
