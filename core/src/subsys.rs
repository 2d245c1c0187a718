//! The subsystems that dmsc's log records name, as NCCL's `NCCL_DEBUG_SUBSYS` names its own.
//!
//! Every log call of dmsc names its subsystem in the `log` crate's `target:` field, as
//! `"dmsc::NET"` and so on, so that a logger can filter on it (`DMSC_DEBUG_SUBSYS`, read by the
//! facade crate's logger). The constants below are those targets; [`NAMES`] lists the names a
//! user may write, in the order of [`Subsys::bit`].

/// Communicator creation, split and shrink; the init banner; settings and secrets.
pub const INIT: &str = "dmsc::INIT";
/// The rendezvous store: its server and clients.
pub const BOOTSTRAP: &str = "dmsc::BOOTSTRAP";
/// TCP connections between ranks: listening, dialing, authentication, backends.
pub const NET: &str = "dmsc::NET";
/// Shared memory between ranks of one host.
pub const SHM: &str = "dmsc::SHM";
/// Several paths per peer: paths suspected, closed, connected again, and their metrics.
pub const SPRAY: &str = "dmsc::SPRAY";
/// Collective and point-to-point operations: each one's start, end or failure.
pub const COLL: &str = "dmsc::COLL";
/// Peer liveness: heartbeats and lost peers (NCCL's reliability subsystem bears this name).
pub const RAS: &str = "dmsc::RAS";

/// The subsystem names accepted in `DMSC_DEBUG_SUBSYS` (besides `ALL`), in bit order.
pub const NAMES: [&str; 7] = ["INIT", "BOOTSTRAP", "NET", "SHM", "SPRAY", "COLL", "RAS"];

/// A set of subsystems, one bit per entry of [`NAMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subsys(u32);

impl Subsys {
    /// Every subsystem.
    pub const ALL: Subsys = Subsys((1 << NAMES.len()) - 1);
    /// No subsystem.
    pub const NONE: Subsys = Subsys(0);

    /// The bit of the subsystem named `name` (case-insensitive; `ALL` is every bit), or `None`
    /// for a name that is not in [`NAMES`].
    pub fn named(name: &str) -> Option<Subsys> {
        if name.eq_ignore_ascii_case("ALL") {
            return Some(Subsys::ALL);
        }
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| Subsys(1 << i))
    }

    /// The subsystem a log target names (`"dmsc::NET"`), or `None` for any other target.
    pub fn of_target(target: &str) -> Option<Subsys> {
        let name = target.strip_prefix("dmsc::")?;
        NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Subsys(1 << i))
    }

    /// Both sets together.
    pub fn union(self, other: Subsys) -> Subsys {
        Subsys(self.0 | other.0)
    }

    /// Every subsystem that is not in this set.
    pub fn complement(self) -> Subsys {
        Subsys(Subsys::ALL.0 & !self.0)
    }

    /// Whether every subsystem of `other` is in this set.
    pub fn contains(self, other: Subsys) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits, one per entry of [`NAMES`].
    pub fn bit(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_constant_is_a_named_subsystem() {
        for (i, t) in [INIT, BOOTSTRAP, NET, SHM, SPRAY, COLL, RAS]
            .iter()
            .enumerate()
        {
            let s = Subsys::of_target(t).unwrap_or_else(|| panic!("{t} has no subsystem"));
            assert_eq!(s.bit(), 1 << i, "{t}");
            assert_eq!(Subsys::named(NAMES[i]), Some(s));
        }
        assert_eq!(Subsys::of_target("dmsc_core::engine"), None);
        assert_eq!(Subsys::of_target("dmsc::FOO"), None);
    }

    #[test]
    fn names_are_case_insensitive_and_all_is_every_bit() {
        assert_eq!(Subsys::named("net"), Subsys::named("NET"));
        assert_eq!(Subsys::named("All"), Some(Subsys::ALL));
        assert_eq!(Subsys::named("NETT"), None);
        let net = Subsys::named("NET").unwrap();
        assert!(!net.complement().contains(net));
        assert!(net.complement().union(net) == Subsys::ALL);
        assert!(Subsys::ALL.contains(net) && !Subsys::NONE.contains(net));
    }
}
