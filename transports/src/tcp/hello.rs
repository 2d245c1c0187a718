//! The greeting's wire form: the `Hello` frame that opens every mesh connection once it is
//! authenticated, naming the sender's rank, the connection's role and the communicator's id,
//! and its check on the accepting side.

use super::options::MeshOptions;
use crate::conn::Role;
use dmsc_core::error::{Error, Result};
use dmsc_core::spray::wire::MAX_PATHS;
use dmsc_core::wire::{FrameHeader, FrameKind, HEADER_LEN};
use dmsc_core::Rank;

/// The first frame on a new TCP connection: identifies the sender (a transport frame kind,
/// [`dmsc_core::wire::TRANSPORT_KINDS`]).
pub(crate) const HELLO: FrameKind = FrameKind::Transport(0x80);

/// Role code of path 0 in a hello (path `p`: this plus `p`).
const PATH_ROLE_BASE: u32 = 16;

pub(crate) fn hello(opts: &MeshOptions, role: Role) -> [u8; HEADER_LEN] {
    let mut h = FrameHeader::plain(HELLO, opts.rank as u32, 0);
    h.seq = opts.comm_id;
    h.chunk = match role {
        Role::Data => 0,
        Role::Control => 1,
        Role::Path(p, epoch) => {
            h.offset = epoch as u64;
            PATH_ROLE_BASE + p as u32
        }
    };
    let mut b = [0u8; HEADER_LEN];
    h.encode(&mut b);
    b
}

/// Check the hello bytes `b` that arrived at rank `rank` of `nranks` in communicator
/// `comm_id`: a valid header of kind `Hello`, the same communicator, a higher rank and a known
/// role. Returns (peer rank, role); never panics on any input (a fuzz target).
pub(crate) fn parse_hello(
    b: &[u8],
    rank: Rank,
    nranks: usize,
    comm_id: u64,
) -> Result<(Rank, Role)> {
    let h = FrameHeader::decode(b)?;
    if h.kind != HELLO {
        return Err(Error::protocol("first frame is not a hello"));
    }
    if h.seq != comm_id {
        return Err(Error::protocol(format!(
            "hello for communicator {:#x}, this is {comm_id:#x}",
            h.seq
        )));
    }
    let peer = h.aux as usize;
    if peer <= rank || peer >= nranks {
        return Err(Error::protocol(format!(
            "hello from rank {peer}, expected a rank in {}..{nranks}",
            rank.saturating_add(1)
        )));
    }
    let role = match h.chunk {
        0 => Role::Data,
        1 => Role::Control,
        r if (PATH_ROLE_BASE..PATH_ROLE_BASE + MAX_PATHS as u32).contains(&r) => {
            let epoch = u32::try_from(h.offset)
                .ok()
                .filter(|&e| e >= 1)
                .ok_or_else(|| {
                    Error::protocol(format!("hello for a path with incarnation {}", h.offset))
                })?;
            Role::Path((r - PATH_ROLE_BASE) as u8, epoch)
        }
        r => return Err(Error::protocol(format!("hello with unknown role {r}"))),
    };
    if !matches!(role, Role::Path(..)) && h.offset != 0 {
        return Err(Error::protocol("hello with an offset"));
    }
    Ok((peer, role))
}

#[cfg(test)]
mod tests {
    use super::super::backend::Backend;
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    fn opts(rank: Rank) -> MeshOptions {
        MeshOptions {
            rank,
            nranks: 4,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            timeout: Duration::from_secs(1),
            backend: Backend::Socket,
            comm_id: 0xc0ff_ee00_1234,
            cma: false,
            secret: None,
            paths: 1,
            path_ips: Vec::new(),
            spray: Default::default(),
            serve: None,
        }
    }

    #[test]
    fn hellos_are_checked() {
        let b = hello(&opts(3), Role::Control);
        assert_eq!(
            parse_hello(&b, 1, 4, 0xc0ff_ee00_1234).unwrap(),
            (3, Role::Control)
        );
        let e = |b: &[u8], rank: Rank, id: u64| parse_hello(b, rank, 4, id).unwrap_err();
        assert!(e(&b, 1, 7).to_string().contains("communicator"));
        assert!(e(&b, 3, 0xc0ff_ee00_1234).to_string().contains("rank 3"));
        assert!(e(&b[..63], 1, 0xc0ff_ee00_1234)
            .to_string()
            .contains("truncated"));
        let mut c = b;
        c[40] = 2; // role
        assert!(e(&c, 1, 0xc0ff_ee00_1234).to_string().contains("role"));
        let mut c = b;
        c[5] = FrameKind::Control.code();
        assert!(e(&c, 1, 0xc0ff_ee00_1234)
            .to_string()
            .contains("not a hello"));
        // A rank beyond any usize arithmetic still gets an error, not an overflow.
        assert!(parse_hello(&b, usize::MAX, usize::MAX, 0xc0ff_ee00_1234).is_err());
    }
}
