//! Shrinking a communicator after a failure: the survivors build a new communicator without
//! the lost ranks (`ncclCommShrink`, MPI's `MPIX_Comm_shrink` of ULFM).
//!
//! The parent is usually failed, so unlike [`Communicator::split`] the rendezvous cannot run
//! over it: it runs through the rendezvous store the parent was built with, whose connection
//! the communicator keeps (`StoreLink`). Each shrink of a parent gets its own key prefix
//! (the parent's prefix, which holds its communicator id, and a generation count), so
//! successive shrinks, and shrinks of the shrunk communicators, never share keys. The lowest
//! survivor, the new rank 0, draws the new communicator id and publishes it with the list of
//! survivors; the others check that list against their own, then all connect a new mesh.
//!
//! The store must outlive the lost ranks. `dmscrun` serves it itself (as torchrun's agent
//! serves its `TCPStore`); under other launchers rank 0 serves it unless
//! `DMSC_STORE_EXTERNAL` says a standalone `dmsc-store` does, so there a shrink needs rank 0
//! alive, or an external store.

use crate::comm::Communicator;
use crate::config::Config;
use dmsc_core::{Error, Rank, Result};
use dmsc_transports::store::random_nonce;

/// The value the new rank 0 publishes: the new id, then the survivors' parent ranks.
fn encode(id: u64, survivors: &[Rank]) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    for &r in survivors {
        v.extend_from_slice(&(r as u64).to_le_bytes());
    }
    v
}

fn decode(v: &[u8]) -> Result<(u64, Vec<Rank>)> {
    if v.len() < 8 || !v.chunks_exact(8).remainder().is_empty() {
        return Err(Error::protocol(format!(
            "shrink record in the store has {} bytes, not a multiple of 8",
            v.len()
        )));
    }
    let mut words = v.chunks_exact(8).map(|c| dmsc_core::codec::le_u64(c, 0));
    let id = words.next().unwrap_or(0);
    let ranks = words
        .map(|w| {
            usize::try_from(w).map_err(|_| Error::protocol(format!("shrink record names rank {w}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((id, ranks))
}

/// The surviving parent ranks, in order, after checking `exclude` against `rank` of `n`.
fn survivors(rank: Rank, n: usize, exclude: &[Rank]) -> Result<Vec<Rank>> {
    if let Some(&bad) = exclude.iter().find(|&&r| r >= n) {
        return Err(Error::invalid(format!(
            "shrink: excluded rank {bad} is out of range for {n} ranks"
        )));
    }
    if exclude.contains(&rank) {
        return Err(Error::invalid(format!(
            "shrink: rank {rank} is in its own exclude list; only the ranks that stay call shrink"
        )));
    }
    Ok((0..n).filter(|r| !exclude.contains(r)).collect())
}

impl Communicator {
    /// Build a new communicator of the ranks of this one minus `exclude`, typically after a
    /// peer was lost (`ncclCommShrink`). Every surviving rank calls it with the same
    /// `exclude` list (duplicates allowed; order irrelevant); the excluded ranks do not call
    /// it. Ranks of the new communicator are the survivors in the order of their ranks here.
    /// This communicator may be failed (it usually is: [`Error::PeerLost`] named the lost
    /// rank); it is not used, and stays as it is. The new one inherits its settings.
    ///
    /// The rendezvous runs through the store this communicator was built with, which must
    /// still be reachable: always under `dmscrun`, which serves it; under other launchers
    /// rank 0 serves it unless `DMSC_STORE_EXTERNAL` is set, so a shrink that excludes rank 0
    /// then fails to reach it. Communicators made by [`Communicator::split`] have no store
    /// and cannot shrink ([`Error::InvalidUsage`]). Survivors that pass different lists get
    /// [`Error::InvalidUsage`] naming both lists, or time out.
    pub fn shrink(&self, exclude: &[Rank]) -> Result<Communicator> {
        self.shrink_with_config(exclude, self.config.clone())
    }

    /// [`Communicator::shrink`] with settings for the new communicator (NCCL's `config`
    /// argument of `ncclCommShrink`). The new communicator listens on this one's interface.
    pub fn shrink_with_config(&self, exclude: &[Rank], config: Config) -> Result<Communicator> {
        let survivors = survivors(self.rank(), self.size(), exclude)?;
        let new_rank = survivors
            .iter()
            .position(|&r| r == self.rank())
            .ok_or_else(|| Error::internal("this rank is missing from the survivors"))?;
        let link = self.store_link.as_ref().ok_or_else(|| {
            Error::usage(
                "shrink needs the rendezvous store, and this communicator has none (it was \
                 made by split)",
            )
        })?;
        let prefix = link.next_shrink_prefix();
        let timeout = config.engine.timeout;
        let mut client = link.client();
        let key = format!("{prefix}/members");
        let comm_id = if new_rank == 0 {
            let id = random_nonce()?;
            client.set(&key, &encode(id, &survivors))?;
            id
        } else {
            let v = client.get(&key, timeout).map_err(|e| match e {
                Error::Timeout {
                    op,
                    waited_s,
                    detail,
                    ..
                } => Error::Timeout {
                    op: format!("shrink on rank {} ({op})", self.rank()),
                    waited_s,
                    missing: vec![survivors[0]],
                    detail: format!(
                        "rank {} (the lowest survivor) did not publish the new communicator; \
                         did every survivor call shrink with the same exclude list? {detail}",
                        survivors[0]
                    ),
                },
                e => e,
            })?;
            let (id, theirs) = decode(&v)?;
            if theirs != survivors {
                return Err(Error::usage(format!(
                    "shrink: the survivors passed different exclude lists: rank {} keeps \
                     ranks {theirs:?}, rank {} keeps ranks {survivors:?}",
                    survivors[0],
                    self.rank()
                )));
            }
            id
        };
        let nranks = survivors.len();
        let key = format!("{prefix}/{comm_id:016x}/addr");
        let (engine, config, topology) = crate::connect::connect_engine(
            config.clone(),
            new_rank,
            nranks,
            self.bind_ip,
            comm_id,
            &mut |mine: &[u8]| client.exchange(&key, new_rank, nranks, mine, timeout),
        )?;
        drop(client);
        let mut comm = Communicator::with_engine(engine, config, topology, None, self.bind_ip)?;
        comm.store_link = Some(link.child(format!("{prefix}/{comm_id:016x}")));
        Ok(comm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_errors() {
        let v = encode(0xfeed, &[0, 2, 3]);
        assert_eq!(decode(&v).unwrap(), (0xfeed, vec![0, 2, 3]));
        assert!(decode(&v[..7]).is_err());
        assert!(decode(&v[..12]).is_err());
    }

    #[test]
    fn survivors_are_checked() {
        assert_eq!(survivors(0, 4, &[2, 2]).unwrap(), vec![0, 1, 3]);
        assert_eq!(survivors(3, 4, &[]).unwrap(), vec![0, 1, 2, 3]);
        let e = survivors(1, 4, &[1]).unwrap_err().to_string();
        assert!(e.contains("own exclude list"), "{e}");
        let e = survivors(1, 4, &[4]).unwrap_err().to_string();
        assert!(e.contains("out of range for 4 ranks"), "{e}");
    }
}
