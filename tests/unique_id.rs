//! Init from a unique id passed around by the program (like ncclGetUniqueId +
//! ncclCommInitRank), with ranks as threads of one process.

use dmsc::{new_unique_id, Communicator, Config, ReduceOp, UniqueId};

/// Rank `rank` of `n` joins through the id `bytes`, on loopback.
fn join(bytes: &[u8], rank: usize, n: usize) -> Communicator {
    let id = UniqueId::from_bytes(bytes).expect("decode id");
    let mut cfg = Config {
        socket_ifname: Some("lo".into()),
        ..Config::default()
    };
    cfg.engine.timeout = std::time::Duration::from_secs(20);
    Communicator::init_with_id(&id, rank, n, cfg).expect("init")
}

/// The tests that open sockets run one at a time (one counts this process's sockets).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn ranks_join_through_a_unique_id() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Keep the store and the mesh on loopback.
    std::env::set_var("DMSC_SOCKET_IFNAME", "lo");
    let id = new_unique_id().expect("unique id");
    let bytes = id.to_bytes();
    assert_eq!(bytes.len(), 128);
    let n = 3;
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            std::thread::spawn(move || {
                let c = join(&bytes, rank, n);
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

/// This process's open sockets.
fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_request_kept_after_its_communicator_pins_no_connection() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("DMSC_SOCKET_IFNAME", "lo");
    let before = sockets();
    let id = new_unique_id().expect("unique id");
    let bytes = id.to_bytes();
    let n = 2;
    let dropped = std::sync::Arc::new(std::sync::Barrier::new(n + 1));
    let counted = std::sync::Arc::new(std::sync::Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            let (dropped, counted) = (dropped.clone(), counted.clone());
            std::thread::spawn(move || {
                let c = join(&bytes, rank, n);
                let mut v = vec![rank as i64 + 1; 1001];
                let req = c.immediate_all_reduce_in_place(&mut v, ReduceOp::Sum);
                while !req.test() {
                    std::thread::yield_now();
                }
                drop(c);
                dropped.wait();
                counted.wait();
                req.wait().expect("all_reduce");
                assert!(v.iter().all(|&x| x == 3), "{:?}", &v[..4]);
            })
        })
        .collect();
    dropped.wait();
    let during = sockets();
    counted.wait();
    for h in handles {
        h.join().expect("rank thread");
    }
    assert_eq!(
        during,
        before,
        "the communicators were dropped, but {} of their sockets stay open while requests are held",
        during.saturating_sub(before)
    );
}
