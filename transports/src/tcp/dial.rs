//! Connecting to a peer's listener, retrying until a deadline (the peer may not be listening
//! yet).

use dmsc_core::error::{Error, Result};
use dmsc_core::Rank;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub(super) fn connect_retry(addr: SocketAddr, deadline: Instant, peer: Rank) -> Result<TcpStream> {
    let mut last = None;
    let mut backoff = Duration::from_millis(5);
    while Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(5))) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
    Err(Error::Timeout {
        op: format!("connecting to rank {peer} at {addr}"),
        waited_s: 0.0,
        missing: vec![peer],
        detail: last.map(|e| e.to_string()).unwrap_or_default(),
    })
}
