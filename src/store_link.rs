//! [`StoreLink`]: a communicator's way back to the rendezvous store it was built through,
//! which [`Communicator::shrink`](crate::Communicator::shrink) needs because a failed
//! communicator cannot rendezvous over itself. Kept apart from both the communicator and
//! shrink, which each use it, so that neither imports the other.

use dmsc_transports::store::StoreClient;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A communicator's connection to its rendezvous store and its key prefix there.
pub(crate) struct StoreLink {
    /// The connection, shared with the communicators shrunk from this one.
    client: Arc<Mutex<StoreClient>>,
    /// Key prefix of this communicator's rendezvous (ends with its id).
    prefix: String,
    /// Shrinks of this communicator so far.
    shrinks: AtomicU64,
}

impl StoreLink {
    /// The link of a communicator that joined through `client` under `prefix`.
    pub(crate) fn new(client: Arc<Mutex<StoreClient>>, prefix: String) -> StoreLink {
        StoreLink {
            client,
            prefix,
            shrinks: AtomicU64::new(0),
        }
    }

    /// The key prefix of this communicator's next shrink: its own prefix and a generation
    /// count, so successive shrinks, and shrinks of shrunk communicators, never share keys.
    pub(crate) fn next_shrink_prefix(&self) -> String {
        let generation = self.shrinks.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}/shrink-{generation}", self.prefix)
    }

    /// The store connection (one request at a time).
    pub(crate) fn client(&self) -> MutexGuard<'_, StoreClient> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link of a communicator made through this one's store under `prefix`.
    pub(crate) fn child(&self, prefix: String) -> StoreLink {
        StoreLink::new(self.client.clone(), prefix)
    }
}
