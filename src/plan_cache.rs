//! [`PlanCache`]: the schedules of a communicator's recent collectives, so that a call
//! repeated with the same description (every step of a training loop) reuses its schedule
//! instead of planning it again. A schedule depends only on the call's description, whether
//! it is in place, and the communicator's rank, host layout and plan settings, which never
//! change. Ranks spread over hosts plan with [`plan::plan_on`] (host-aware algorithms
//! priced with the measured links); on one host that is [`plan::plan`].

use dmsc_core::plan::{self, Hosts, PlanConfig};
use dmsc_core::schedule::Schedule;
use dmsc_core::{CollDesc, Result};
use std::sync::{Arc, Mutex};

/// Schedules kept: enough for the distinct calls of a training step (gradient buckets,
/// a barrier, a few broadcasts), small enough that a linear search is cheaper than hashing.
const CAPACITY: usize = 16;

/// A call's description and whether it is in place: what its schedule depends on.
type Key = (CollDesc, bool);

/// The most recently used schedules, most recent last.
#[derive(Default)]
pub(crate) struct PlanCache {
    entries: Mutex<Vec<(Key, Arc<Schedule>)>>,
}

impl PlanCache {
    /// The schedule of `desc` (`inplace` or not) for `rank` of the ranks laid out as
    /// `hosts`: the cached one, or a new plan that is then cached (dropping the least
    /// recently used past [`CAPACITY`]).
    pub(crate) fn get(
        &self,
        desc: &CollDesc,
        inplace: bool,
        rank: usize,
        hosts: &Hosts,
        cfg: &PlanConfig,
    ) -> Result<Arc<Schedule>> {
        let key = (*desc, inplace);
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // The last call is the likeliest one (a loop of one call): look from the end.
        if let Some(i) = e.iter().rposition(|(k, _)| *k == key) {
            let sched = e[i].1.clone();
            if i + 1 != e.len() {
                let hit = e.remove(i);
                e.push(hit);
            }
            return Ok(sched);
        }
        drop(e);
        let sched = Arc::new(plan::plan_on(desc, rank, hosts, inplace, cfg)?);
        log::info!(
            target: dmsc_core::subsys::COLL,
            "rank {rank}: {desc} planned with {} ({} steps, {} host(s))",
            plan::choose_algo_on(desc, hosts, cfg).name(),
            sched.steps.len(),
            hosts.nhosts()
        );
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= CAPACITY {
            e.remove(0);
        }
        e.push((key, sched.clone()));
        Ok(sched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsc_core::{CollKind, DataType, ReduceOp};

    fn desc(count: usize) -> CollDesc {
        CollDesc {
            kind: CollKind::AllReduce,
            count,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
        }
    }

    #[test]
    fn repeated_calls_share_a_schedule_and_old_ones_are_dropped() {
        let (c, cfg) = (PlanCache::default(), PlanConfig::default());
        let h = Hosts::from_sizes(&[4]).unwrap();
        let a = c.get(&desc(100), false, 0, &h, &cfg).unwrap();
        let b = c.get(&desc(100), false, 0, &h, &cfg).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let inplace = c.get(&desc(100), true, 0, &h, &cfg).unwrap();
        assert!(!Arc::ptr_eq(&a, &inplace));
        assert_eq!(*a, plan::plan(&desc(100), 0, 4, false, &cfg).unwrap());
        for n in 0..CAPACITY {
            c.get(&desc(1000 + n), false, 0, &h, &cfg).unwrap();
        }
        let again = c.get(&desc(100), false, 0, &h, &cfg).unwrap();
        assert!(
            !Arc::ptr_eq(&a, &again),
            "evicted after {CAPACITY} newer calls"
        );
        assert!(c.get(&desc(usize::MAX), false, 0, &h, &cfg).is_err());
    }

    #[test]
    fn ranks_on_several_hosts_plan_on_the_layout() {
        let c = PlanCache::default();
        let cfg = PlanConfig {
            algo: Some(dmsc_core::Algo::Hierarchical),
            ..PlanConfig::default()
        };
        let h = Hosts::from_sizes(&[2, 2]).unwrap();
        let got = c.get(&desc(1 << 20), false, 1, &h, &cfg).unwrap();
        let want = plan::plan_hierarchical(&desc(1 << 20), 1, &h, false, &cfg).unwrap();
        assert_eq!(*got, want);
    }
}
