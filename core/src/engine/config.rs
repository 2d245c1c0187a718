//! Engine settings.

use super::regcache::RegCacheConfig;
use std::time::Duration;

/// Settings of an [`super::Engine`]; every rank of a communicator must use the same
/// `chunk_bytes` (frames are checked against it).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Largest chunk of a message on the wire (`DMSC_CHUNK_BYTES`).
    pub chunk_bytes: usize,
    /// Chunks in flight per peer and direction (`DMSC_WINDOW`).
    pub window: usize,
    /// Deadline of every operation (`DMSC_TIMEOUT`).
    pub timeout: Duration,
    /// How long to poll without blocking after the last progress (`DMSC_SPIN_US`).
    pub spin: Duration,
    /// While spinning, yield the core between polls (`sched_yield`). Right when this host
    /// runs more ranks than it has cores (the peer we wait for may need this core); wrong
    /// otherwise, where each yield costs a system call and often a context switch.
    pub spin_yield: bool,
    /// How long a timing-out rank waits for the others' status replies.
    pub status_grace: Duration,
    /// Put a CRC32C of every chunk's payload in its frame header and check it on arrival
    /// (`DMSC_CHECKSUM=1`). Must be the same on every rank.
    pub checksum: bool,
    /// A peer that stops talking is declared lost within this time
    /// (`DMSC_HEARTBEAT_TIMEOUT`; `None` turns heartbeats off). See `super::liveness`.
    pub heartbeat_timeout: Option<Duration>,
    /// Bounds of the registration cache, used only with a transport that registers memory
    /// (see [`super::regcache`]).
    pub registration: RegCacheConfig,
}

impl EngineConfig {
    /// The default of [`EngineConfig::heartbeat_timeout`]: 1 s (the README defends it).
    pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

    /// How often an idle communicator's progress thread serves control traffic: often
    /// enough that heartbeats leave on time and peers' errors are recorded promptly.
    pub fn idle_period(&self) -> Duration {
        let cap = Duration::from_millis(50);
        match self.heartbeat_timeout {
            Some(t) => (super::liveness::interval(t) / 4).clamp(Duration::from_millis(1), cap),
            None => cap,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            chunk_bytes: 512 << 10,
            window: 4,
            timeout: Duration::from_secs(300),
            spin: Duration::from_micros(50),
            spin_yield: true,
            status_grace: Duration::from_millis(500),
            checksum: false,
            heartbeat_timeout: Some(Self::DEFAULT_HEARTBEAT_TIMEOUT),
            registration: RegCacheConfig::default(),
        }
    }
}
