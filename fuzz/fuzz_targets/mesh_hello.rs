//! The hello that opens every mesh connection (`tcp::hello::parse_hello`): never panics;
//! accepts only a higher rank of the same communicator, and the hello that rank sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dmsc_transports::fuzzing::mesh_hello(data));
