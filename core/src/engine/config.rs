//! Engine settings.

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
    /// How long a timing-out rank waits for the others' status replies.
    pub status_grace: Duration,
    /// Log every operation's start and end (`DMSC_DEBUG=INFO`).
    pub debug: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            chunk_bytes: 512 << 10,
            window: 4,
            timeout: Duration::from_secs(300),
            spin: Duration::from_micros(50),
            status_grace: Duration::from_millis(500),
            debug: false,
        }
    }
}
