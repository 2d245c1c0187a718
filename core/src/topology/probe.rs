//! The topology probe, without I/O: who meets whom, what each meeting measures, how the
//! figures travel, and how every rank assembles the same link matrix from them.
//!
//! The probe runs once when a communicator spans several hosts (`DMSC_TOPO_PROBE=0` turns it
//! off). It is a sequence of *meetings* between two ranks:
//! - within each host of two or more ranks, its first two ranks meet (all hosts at once);
//! - between hosts, the first ranks of two hosts meet, in rounds in which each host takes
//!   part in at most one meeting, so that a meeting has its host's network link to itself.
//!   Up to [`ALL_PAIRS_HOSTS`] hosts every pair meets (the circle method's `H-1` rounds of a
//!   round-robin tournament); above, two rounds of neighbours, `(2k, 2k+1)` then
//!   `(2k+1, 2k+2)`, sample every host's link without the `H²` cost.
//!
//! In a meeting the initiator (the lower rank) times [`PINGS`] round trips of an 8-byte
//! message (latency: half the median), then both ends climb a [`Ladder`] of exchanges of
//! doubling size, each size announced by the initiator (bandwidth: the difference of the
//! last two rungs, which cancels a token-bucket shaper's burst and the fixed cost of a
//! transfer; see `ladder.rs`). Every rank then contributes a fixed-length
//! [`Record`] of what it measured to one all-gather, and [`assemble`] turns the records into
//! the [`Topology`]'s links, identically on every rank.

#[cfg(doc)]
use super::ladder::Ladder;
use super::{Link, Topology};
use crate::error::{Error, Result};
use crate::plan::Hosts;
use crate::types::Rank;

/// Above this many hosts the probe samples neighbouring host pairs instead of all pairs.
pub const ALL_PAIRS_HOSTS: usize = 8;
/// Round trips timed per meeting.
pub const PINGS: usize = 10;

/// Which end of a meeting a rank is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Times the round trips and the exchanges, and picks the size of each.
    Initiator,
    /// Echoes the pings and exchanges what the initiator asks for.
    Responder,
}

/// One meeting of this rank with a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meeting {
    /// The rank met.
    pub peer: Rank,
    /// This rank's end.
    pub role: Role,
    /// `None`: the meeting within this rank's host; `Some(i)`: round `i` between hosts.
    pub round: Option<usize>,
}

/// The rounds of inter-host meetings: in each, pairs of distinct hosts, each host in at most
/// one pair. Every rank computes the same rounds from the same layout.
pub fn rounds(nhosts: usize) -> Vec<Vec<(usize, usize)>> {
    if nhosts < 2 {
        return Vec::new();
    }
    if nhosts <= ALL_PAIRS_HOSTS {
        // Circle method: seat n (rounded up to even) hosts, fix the last one, rotate the
        // others; a seat past the real hosts is a bye.
        let n = nhosts + nhosts % 2;
        let m = n - 1;
        return (0..m)
            .map(|r| {
                let mut pairs = vec![(r, m)];
                for k in 1..n / 2 {
                    pairs.push(((r + k) % m, (r + m - k) % m));
                }
                pairs
                    .into_iter()
                    .filter(|&(a, b)| a < nhosts && b < nhosts)
                    .map(|(a, b)| (a.min(b), a.max(b)))
                    .collect()
            })
            .collect();
    }
    let first = (0..nhosts / 2).map(|k| (2 * k, 2 * k + 1)).collect();
    let mut second: Vec<(usize, usize)> = (0..nhosts)
        .step_by(2)
        .skip(1)
        .filter(|&b| b < nhosts)
        .map(|b| (b - 1, b))
        .collect();
    if nhosts.is_multiple_of(2) {
        second.push((0, nhosts - 1));
    }
    vec![first, second]
}

/// The meetings of `rank`, in the order it holds them: the one within its host, then one
/// per round it takes part in.
pub fn meetings(hosts: &Hosts, rank: Rank) -> Vec<Meeting> {
    let mut out = Vec::new();
    let h = hosts.host_of(rank);
    let members = hosts.members(h);
    if members.len() >= 2 && (rank == members[0] || rank == members[1]) {
        let (role, peer) = if rank == members[0] {
            (Role::Initiator, members[1])
        } else {
            (Role::Responder, members[0])
        };
        out.push(Meeting {
            peer,
            role,
            round: None,
        });
    }
    if rank != members[0] {
        return out;
    }
    for (i, pairs) in rounds(hosts.nhosts()).iter().enumerate() {
        for &(a, b) in pairs {
            let (role, other) = if a == h {
                (Role::Initiator, b)
            } else if b == h {
                (Role::Responder, a)
            } else {
                continue;
            };
            out.push(Meeting {
                peer: hosts.members(other)[0],
                role,
                round: Some(i),
            });
        }
    }
    out
}

/// The latency of a link from the round trips timed on it (seconds): half the median.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when there are no round trips.
pub fn latency(round_trips: &[f64]) -> Result<f64> {
    if round_trips.is_empty() {
        return Err(Error::invalid("a latency needs at least one round trip"));
    }
    Ok(super::median(round_trips.to_vec()) / 2.0)
}

/// What one rank measured, as the fixed-length vector of `f64` the all-gather carries
/// (NaN where the rank measured nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The link within its host, when it initiated that meeting.
    pub intra: Option<Link>,
    /// Per round between hosts: the other host and the link, when it initiated a meeting.
    pub inter: Vec<Option<(usize, Link)>>,
}

impl Record {
    /// A record of nothing for a layout of `nhosts` hosts.
    pub fn empty(nhosts: usize) -> Record {
        Record {
            intra: None,
            inter: vec![None; rounds(nhosts).len()],
        }
    }

    /// Length of the encoded record for a layout of `nhosts` hosts.
    pub fn len(nhosts: usize) -> usize {
        2 + 3 * rounds(nhosts).len()
    }

    /// The record as `f64`s: `[latency, bandwidth]` within the host, then
    /// `[host, latency, bandwidth]` per round.
    pub fn encode(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(2 + 3 * self.inter.len());
        let link = |v: &mut Vec<f64>, l: Option<Link>| match l {
            Some(l) => v.extend([l.latency_s, l.bytes_per_s]),
            None => v.extend([f64::NAN, f64::NAN]),
        };
        link(&mut v, self.intra);
        for r in &self.inter {
            v.push(r.map_or(f64::NAN, |(h, _)| h as f64));
            link(&mut v, r.map(|(_, l)| l));
        }
        v
    }
}

/// Set the links of `topo` from every rank's encoded record (`records` holds
/// [`Record::len`] values per rank, in rank order). Figures that are absent (NaN) are
/// skipped.
///
/// # Errors
///
/// [`Error::Protocol`] when the records have the wrong length, or name a host out of range
/// or a figure that is not finite and positive: a rank that measured something else than
/// this rank expects.
pub fn assemble(topo: &mut Topology, records: &[f64]) -> Result<()> {
    let n = topo.nhosts();
    let len = Record::len(n);
    if records.len() != len * topo.nranks() {
        return Err(Error::protocol(format!(
            "topology probe: {} values gathered, expected {} ranks x {len}",
            records.len(),
            topo.nranks()
        )));
    }
    for (r, rec) in records.chunks(len).enumerate() {
        let h = topo.host_of(r);
        let bad = |what: String| Error::protocol(format!("topology probe: rank {r} {what}"));
        let link = |lat: f64, bw: f64| -> Option<Link> {
            (!lat.is_nan() || !bw.is_nan()).then_some(Link {
                latency_s: lat,
                bytes_per_s: bw,
            })
        };
        if let Some(l) = link(rec[0], rec[1]) {
            topo.set_link(h, h, l)
                .map_err(|e| bad(format!("reported a bad link within its host: {e}")))?;
        }
        for i in 0..rounds(n).len() {
            let (peer, lat, bw) = (rec[2 + 3 * i], rec[3 + 3 * i], rec[4 + 3 * i]);
            let Some(l) = link(lat, bw) else { continue };
            if !(peer >= 0.0 && peer < n as f64 && peer.fract() == 0.0) || peer as usize == h {
                return Err(bad(format!("named host {peer} in probe round {i}")));
            }
            topo.set_link(h, peer as usize, l)
                .map_err(|e| bad(format!("reported a bad link in round {i}: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn small_clusters_meet_every_pair_once_with_one_meeting_per_host_and_round() {
        for h in 2..=ALL_PAIRS_HOSTS {
            let rs = rounds(h);
            let mut seen = HashSet::new();
            for pairs in &rs {
                let mut busy = HashSet::new();
                for &(a, b) in pairs {
                    assert!(a < b && b < h, "h={h} {pairs:?}");
                    assert!(
                        busy.insert(a) && busy.insert(b),
                        "h={h}: a host twice in {pairs:?}"
                    );
                    assert!(seen.insert((a, b)), "h={h}: {a}-{b} met twice");
                }
            }
            assert_eq!(seen.len(), h * (h - 1) / 2, "h={h}");
            assert_eq!(rs.len(), h - 1 + h % 2, "h={h}");
        }
        assert!(rounds(1).is_empty());
    }

    #[test]
    fn large_clusters_sample_every_host_in_two_rounds() {
        for h in [9, 10, 64, 1023, 1024] {
            let rs = rounds(h);
            assert_eq!(rs.len(), 2);
            let mut covered = HashSet::new();
            for pairs in &rs {
                let mut busy = HashSet::new();
                for &(a, b) in pairs {
                    assert!(a < b && b < h);
                    assert!(busy.insert(a) && busy.insert(b), "h={h}");
                    covered.insert(a);
                    covered.insert(b);
                }
            }
            assert_eq!(covered.len(), h, "h={h}");
        }
    }

    #[test]
    fn meetings_pair_up_with_opposite_roles() {
        let hosts = Hosts::new(&[0, 1, 2, 0, 1, 2, 0, 1, 3]).unwrap();
        let all: Vec<Vec<Meeting>> = (0..9).map(|r| meetings(&hosts, r)).collect();
        for (r, ms) in all.iter().enumerate() {
            for m in ms {
                let back = all[m.peer]
                    .iter()
                    .find(|x| x.peer == r && x.round == m.round)
                    .unwrap_or_else(|| panic!("rank {r} meets {} in {:?} alone", m.peer, m.round));
                assert_ne!(back.role, m.role);
                // Hosts are numbered by their first rank, so the lower host's leader is the lower rank.
                assert_eq!(m.role == Role::Initiator, r < m.peer);
            }
        }
        // Rank 0 leads host 0: its host meeting with rank 3, then one per round it plays.
        assert_eq!(all[0][0].peer, 3);
        assert_eq!(all[0].len(), 1 + 3);
        // Rank 6, third on host 0, meets nobody; host 3 (rank 8 alone) meets no one within.
        assert!(all[6].is_empty());
        assert!(all[8].iter().all(|m| m.round.is_some()));
        // Round order is the same at both ends, so no meeting waits on a later one.
        for ms in &all {
            let order: Vec<_> = ms.iter().map(|m| m.round).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, sorted);
        }
    }

    #[test]
    fn latency_is_half_the_median_round_trip() {
        assert_eq!(latency(&[4.0, 2.0, 100.0]).unwrap(), 2.0);
        assert!(latency(&[]).is_err());
    }

    #[test]
    fn records_round_trip_into_the_same_matrix_on_every_rank() {
        let host_id = [0, 0, 1, 1, 2];
        let names: Vec<String> = (0..5).map(|r| format!("n{r}")).collect();
        let mut topo = Topology::new(&host_id, &names).unwrap();
        let l = |us: f64| Link {
            latency_s: us * 1e-6,
            bytes_per_s: 1e8,
        };
        let mut recs = vec![Record::empty(3); 5];
        recs[0].intra = Some(l(1.0));
        recs[0].inter[0] = Some((2, l(50.0)));
        recs[2].intra = Some(l(2.0));
        recs[2].inter[1] = Some((2, l(60.0)));
        let flat: Vec<f64> = recs.iter().flat_map(Record::encode).collect();
        assert_eq!(flat.len(), 5 * Record::len(3));
        assemble(&mut topo, &flat).unwrap();
        assert_eq!(topo.link(0, 0).unwrap(), Some(l(1.0)));
        assert_eq!(topo.link(2, 0).unwrap(), Some(l(50.0)));
        assert_eq!(topo.link(1, 2).unwrap(), Some(l(60.0)));
        assert_eq!(topo.link(0, 1).unwrap(), None);
        assert_eq!(topo.link(2, 2).unwrap(), None);
    }

    #[test]
    fn corrupt_records_are_named() {
        let names: Vec<String> = (0..2).map(|r| format!("n{r}")).collect();
        let mut topo = Topology::new(&[0, 1], &names).unwrap();
        let e = assemble(&mut topo, &[0.0; 3]).unwrap_err().to_string();
        assert!(e.contains("3 values gathered"), "{e}");
        let mut rec = Record::empty(2).encode();
        rec[2..5].copy_from_slice(&[7.0, 1e-4, 1e8]);
        let mut flat = rec.clone();
        flat.extend(Record::empty(2).encode());
        let e = assemble(&mut topo, &flat).unwrap_err().to_string();
        assert!(e.contains("rank 0 named host 7"), "{e}");
        rec[2..5].copy_from_slice(&[1.0, -1.0, 1e8]);
        let mut flat = rec;
        flat.extend(Record::empty(2).encode());
        let e = assemble(&mut topo, &flat).unwrap_err().to_string();
        assert!(e.contains("rank 0 reported a bad link"), "{e}");
    }
}
