//! The memory-attach handshake record (`cma::handshake::Record::decode`): never panics;
//! what decodes re-encodes to the same 40 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dmsc_transports::fuzzing::cma_record(data));
