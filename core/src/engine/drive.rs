//! The drive loop of one operation: spin-then-block polling of the transport, completions
//! applied to the operation, deadlines, abort, and the cleanup of a failed operation (every
//! posted transfer withdrawn before the call returns).

use super::exec::{Exec, Labels};
use super::*;

impl Engine {
    pub(super) fn execute(
        &mut self,
        labels: Labels,
        desc: CollDesc,
        sched: Arc<Schedule>,
        mut mem: OpMemory,
    ) -> Result<()> {
        let started_at = Instant::now();
        let dev = self.device_for(&mem)?;
        let need = sched.scratch_elems.saturating_mul(desc.dtype.size());
        self.ensure_buffer(dev, need, |d| &mut d.scratch)?;
        // The caller's device memory is registered for this call only.
        let device_buffers: Vec<(usize, usize)> =
            if self.devices[dev].device.kind() == MemKind::Host {
                Vec::new()
            } else {
                [&mem.input, &mem.output]
                    .into_iter()
                    .chain(mem.group.iter())
                    .filter(|r| r.len > 0)
                    .map(|r| (r.ptr as usize, r.len))
                    .collect()
            };
        let mut scratch = self.devices[dev]
            .scratch
            .as_ref()
            .map_or(Region::EMPTY, |b| Region {
                kind: b.kind(),
                ..Region::host(b.ptr(), b.len())
            });
        log::info!(target: crate::subsys::COLL, "rank {} start {} {desc}", self.rank, labels.short());
        self.current = Some(desc);
        // Registered memory (transports that need it only): leased before anything is
        // posted, given back once nothing posted uses it.
        let mut leases = Vec::new();
        let registered = self.lease_memory(dev, &mut mem, &mut scratch, &mut leases);
        let mut ex = Exec::new(
            labels,
            desc,
            self.nranks,
            sched,
            mem,
            scratch,
            self.cfg.chunk_bytes,
            self.cfg.window,
            self.cfg.checksum,
            self.epoch,
            &self.devices[dev].reg_peers,
            std::mem::take(&mut self.exec_bufs),
        );
        // A panic must not unwind past posted operations: the transport would keep pointers
        // into memory the caller frees. Treat it as a failure like any other.
        let r = registered.and_then(|()| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.drive(dev, &mut ex, started_at)
            }))
            .unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Error::internal(format!("panic in the engine: {what}")))
            })
        });
        self.epoch = ex.epoch();
        self.current = None;
        if let Err(e) = &r {
            log::info!(
                target: crate::subsys::COLL,
                "rank {} failed {} after {:.1} us: {e}",
                self.rank,
                ex.labels.short(),
                started_at.elapsed().as_secs_f64() * 1e6
            );
            self.transport.cancel_all();
            ex.release(&mut self.devices[dev].pool);
            self.release_memory(leases);
            self.forget_device_buffers(&device_buffers);
            self.fail(e.clone(), &ex.labels);
        } else {
            self.release_memory(leases);
            self.forget_device_buffers(&device_buffers);
            log::info!(
                target: crate::subsys::COLL,
                "rank {} end {} in {:.1} us",
                self.rank,
                ex.labels.short(),
                started_at.elapsed().as_secs_f64() * 1e6
            );
        }
        // Nothing is posted any more (completed, or withdrawn by `cancel_all`).
        self.exec_bufs = ex.into_bufs();
        r
    }

    pub(super) fn drive(&mut self, dev: usize, ex: &mut Exec, started_at: Instant) -> Result<()> {
        let deadline = started_at + self.cfg.timeout;
        let d = &mut self.devices[dev];
        ex.start(
            &mut *self.transport,
            &mut d.pool,
            &mut *d.device,
            &mut self.reg.cache,
        )?;
        let mut last_progress = started_at;
        while !ex.finished() {
            if self.abort.is_aborted() {
                return Err(Error::Aborted {
                    detail: format!("{} on rank {} was aborted", ex.labels.describe(), self.rank),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout_error(ex, started_at));
            }
            let wait = if now.duration_since(last_progress) < self.cfg.spin {
                Duration::ZERO
            } else {
                (deadline - now).min(Duration::from_millis(100))
            };
            let mut comps = std::mem::take(&mut self.completions);
            comps.clear();
            let r = self.poll_io_at(&mut comps, wait, now);
            let mut progressed = false;
            let mut result = r;
            // The peer whose connection failed, while that is the error.
            let mut lost_link = None;
            for c in comps.drain(..) {
                if result.is_err() {
                    // A peer's report of what went wrong first may be in the same batch:
                    // prefer it to the bare loss of a connection.
                    if let (Some(_), Completion::Control { peer, payload }) = (lost_link, &c) {
                        if let Err(e) = self.on_control(*peer, payload) {
                            result = Err(e);
                            lost_link = None;
                        }
                    }
                    continue;
                }
                let d = &mut self.devices[dev];
                match ex.complete(&c, &mut d.pool, &mut *d.device) {
                    Ok(true) => progressed = true,
                    Ok(false) => {
                        if let Completion::PeerFailed { peer, .. } = &c {
                            lost_link = Some(*peer);
                        }
                        result = self.on_other(&c, ex);
                    }
                    Err(e) => result = Err(e),
                }
            }
            self.completions = comps;
            if let (Some(peer), Err(_)) = (lost_link, &result) {
                // A peer that failed first tells everyone why, then exits: wait a little
                // for its reason (or another rank's).
                if let Some(cause) = self.root_cause(peer, Duration::from_millis(100)) {
                    result = Err(cause);
                }
            }
            result?;
            self.check_peers_at(Some(&*ex), now)?;
            if progressed {
                let d = &mut self.devices[dev];
                ex.pump(
                    &mut *self.transport,
                    &mut d.pool,
                    &mut *d.device,
                    &mut self.reg.cache,
                )?;
                last_progress = if wait.is_zero() { now } else { Instant::now() };
            } else if wait.is_zero() {
                if self.cfg.spin_yield {
                    // Spinning with more ranks than cores: let another runnable rank on this
                    // core go first, so the peer we wait for can make the progress we need.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        Ok(())
    }
}
