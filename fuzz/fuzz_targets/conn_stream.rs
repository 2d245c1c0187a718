//! The per-connection framing state machine (`conn::Conn`) fed a hostile byte stream in
//! pieces of random sizes: never panics, never completes a frame it did not fully receive,
//! and delivers exactly the frames the stream carried (see `dmsc_transports::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dmsc_transports::fuzzing::conn_stream(data));
