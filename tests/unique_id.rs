//! Init from a unique id passed around by the program (like ncclGetUniqueId +
//! ncclCommInitRank), with ranks as threads of one process.

use dmsc::{new_unique_id, Communicator, Config, ReduceOp, UniqueId};

#[test]
fn ranks_join_through_a_unique_id() {
    // Keep the store and the mesh on loopback.
    std::env::set_var("DMSC_SOCKET_IFNAME", "lo");
    let id = new_unique_id().expect("unique id");
    let bytes = id.to_bytes();
    assert_eq!(bytes.len(), 128);
    let n = 3;
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            std::thread::spawn(move || {
                let id = UniqueId::from_bytes(&bytes).expect("decode id");
                let mut cfg = Config {
                    socket_ifname: Some("lo".into()),
                    ..Config::default()
                };
                cfg.engine.timeout = std::time::Duration::from_secs(20);
                let c = Communicator::init_with_id(&id, rank, n, cfg).expect("init");
                let mut v = vec![rank as i64 + 1; 1001];
                c.all_reduce_in_place(&mut v, ReduceOp::Sum)
                    .expect("all_reduce");
                assert!(v.iter().all(|&x| x == 6), "{:?}", &v[..4]);
                c.barrier().expect("barrier");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("rank thread");
    }
}

#[test]
fn a_damaged_id_is_an_error() {
    let mut b = [0u8; 128];
    b[0] = 1;
    let e = UniqueId::from_bytes(&b).expect_err("garbage id");
    assert!(!e.to_string().is_empty());
    assert!(UniqueId::from_bytes(&b[..10]).is_err());
}
