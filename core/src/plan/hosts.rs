//! Host layout: which host each rank runs on, for the hierarchical algorithms.
//!
//! A [`Hosts`] maps every rank to a host and gives each rank its *local index* (its position
//! among the ranks of its host, in rank order). Host ids given by the caller may be any
//! numbers (a hash of the host name, say); they are normalised to `0..nhosts` in order of
//! first appearance, so host `0` is the host of rank 0. Hosts may hold different numbers of
//! ranks, and a host's ranks need not be contiguous. This is the information NCCL derives
//! from its topology detection and MPI from `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)`.

use crate::error::{Error, Result};
use crate::types::Rank;

/// Which host each rank runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosts {
    /// Normalised host of each rank.
    host_of: Vec<usize>,
    /// Position of each rank among its host's ranks.
    local: Vec<usize>,
    /// Ranks of each host, ascending.
    members: Vec<Vec<Rank>>,
}

impl Hosts {
    /// The layout in which rank `r` runs on the host with id `host_of[r]`; ids are arbitrary
    /// and normalised in order of first appearance.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `host_of` is empty (a layout needs at least one rank).
    pub fn new(host_of: &[usize]) -> Result<Hosts> {
        if host_of.is_empty() {
            return Err(Error::invalid(
                "host layout has no ranks: host_of must name a host for at least one rank",
            ));
        }
        let mut ids: Vec<usize> = Vec::new();
        let mut members: Vec<Vec<Rank>> = Vec::new();
        let mut norm = Vec::with_capacity(host_of.len());
        let mut local = Vec::with_capacity(host_of.len());
        for (r, &id) in host_of.iter().enumerate() {
            let h = match ids.iter().position(|&x| x == id) {
                Some(h) => h,
                None => {
                    ids.push(id);
                    members.push(Vec::new());
                    ids.len() - 1
                }
            };
            local.push(members[h].len());
            members[h].push(r);
            norm.push(h);
        }
        Ok(Hosts {
            host_of: norm,
            local,
            members,
        })
    }

    /// The layout with `sizes[h]` consecutive ranks on host `h` (ranks `0..sizes[0]` on
    /// host 0, and so on).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `sizes` is empty or a host has no ranks.
    pub fn from_sizes(sizes: &[usize]) -> Result<Hosts> {
        if sizes.is_empty() {
            return Err(Error::invalid("host layout has no hosts: sizes is empty"));
        }
        if let Some(h) = sizes.iter().position(|&s| s == 0) {
            return Err(Error::invalid(format!(
                "host {h} of the layout {sizes:?} has no ranks"
            )));
        }
        let host_of: Vec<usize> = sizes
            .iter()
            .enumerate()
            .flat_map(|(h, &s)| std::iter::repeat_n(h, s))
            .collect();
        Hosts::new(&host_of)
    }

    /// Number of ranks.
    pub fn nranks(&self) -> usize {
        self.host_of.len()
    }

    /// Number of hosts.
    pub fn nhosts(&self) -> usize {
        self.members.len()
    }

    /// The (normalised) host of `rank`; `rank` must be below [`Hosts::nranks`].
    pub fn host_of(&self, rank: Rank) -> usize {
        self.host_of[rank]
    }

    /// The position of `rank` among the ranks of its host.
    pub fn local_index(&self, rank: Rank) -> usize {
        self.local[rank]
    }

    /// The ranks of host `host`, ascending; `host` must be below [`Hosts::nhosts`].
    pub fn members(&self, host: usize) -> &[Rank] {
        &self.members[host]
    }

    /// Number of ranks of each host.
    pub fn sizes(&self) -> Vec<usize> {
        self.members.iter().map(Vec::len).collect()
    }

    /// The host of every rank, in rank order.
    pub fn host_ids(&self) -> Vec<usize> {
        (0..self.nranks()).map(|r| self.host_of(r)).collect()
    }

    /// Ranks on the smallest host (at least 1).
    pub fn min_size(&self) -> usize {
        self.members.iter().map(Vec::len).min().unwrap_or(1)
    }

    /// The ranks host by host (host 0's in rank order, then host 1's, ...): a ring in this
    /// order crosses each inter-host boundary exactly twice (once in, once out per host).
    pub fn host_order(&self) -> Vec<Rank> {
        self.members.iter().flatten().copied().collect()
    }

    /// Checks that the layout describes a world of `nranks` ranks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming both sizes when they differ.
    pub fn check_world(&self, nranks: usize) -> Result<()> {
        if self.nranks() != nranks {
            return Err(Error::invalid(format!(
                "host layout describes {} ranks, the world has {nranks}",
                self.nranks()
            )));
        }
        Ok(())
    }
}
