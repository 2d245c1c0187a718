//! A call on CUDA device memory with no device to serve it (a build without the `cuda`
//! feature, or no driver) is refused with an error that says so: never run on host kernels
//! over device addresses. (tests/device_calls.rs runs device calls on a fake device.)

use dmsc::call::{Call, CollArgs, Names, Span};
use dmsc::{new_unique_id, CollKind, Communicator, Config, DataType, ReduceOp};
use dmsc_core::engine::MemKind;

#[test]
fn a_call_on_device_memory_is_refused_not_run_on_the_host() {
    std::env::set_var("DMSC_SOCKET_IFNAME", "lo");
    let id = new_unique_id().expect("unique id");
    let cfg = Config {
        socket_ifname: Some("lo".into()),
        ..Config::default()
    };
    let comm = Communicator::init_with_id(&id, 0, 1, cfg).expect("init a 1-rank communicator");
    // Addresses that are never dereferenced: the call must be refused before any access.
    let dev = |a: usize| Span::in_memory(a as *const u8, 64, MemKind::Cuda { device: 0 });
    let args = CollArgs {
        kind: CollKind::AllReduce,
        dtype: DataType::Float32,
        op: ReduceOp::Sum,
        root: 0,
        input: Some(dev(0x7f00_0000)),
        output: dev(0x7f10_0000),
        count: Some(16),
        factor: None,
    };
    let call = Call::collective(comm.shape(), args, &Names::RUST).expect("a valid device call");
    // SAFETY: the call is refused before its spans are touched (what this test checks; were
    // it not, the test would crash rather than pass).
    let e = unsafe { comm.run_call(&call) }.unwrap_err().to_string();
    assert!(
        e.contains("CUDA device 0") && (e.contains("`cuda` feature") || e.contains("driver")),
        "{e}"
    );
}
