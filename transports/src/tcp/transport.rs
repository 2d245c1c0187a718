//! Wrapping an established mesh in the backend that drives it: io_uring, or plain sockets
//! when the ring is refused (`EPERM` from a container's seccomp policy, `ENOSYS` from a
//! kernel without io_uring), logged once per process.

use super::backend::Backend;
use super::conns::Mesh;
use super::socket::SocketTransport;
use super::uring::{self, UringTransport};
use dmsc_core::engine::Transport;
use dmsc_core::error::{Error, Result};
use std::sync::Once;

static FALLBACK_LOGGED: Once = Once::new();

/// Wrap an established mesh into the chosen backend.
pub(crate) fn make_transport(mesh: Mesh, backend: Backend) -> Result<Box<dyn Transport>> {
    let entries = ((mesh.conns.len() * 2 + 16) as u32).next_power_of_two();
    match backend {
        Backend::Socket => Ok(Box::new(SocketTransport::new(mesh)?)),
        Backend::Uring => {
            let ring = uring::probe_ring(entries).map_err(|e| {
                Error::io("creating an io_uring (DMSC_TRANSPORT=uring forces it)", &e)
            })?;
            Ok(Box::new(UringTransport::new(mesh, ring)?))
        }
        Backend::Auto => match uring::probe_ring(entries) {
            Ok(ring) => Ok(Box::new(UringTransport::new(mesh, ring)?)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOSYS)) => {
                FALLBACK_LOGGED.call_once(|| {
                    log::info!(
                        target: dmsc_core::subsys::NET,
                        "io_uring is not available ({e}); using plain sockets with poll(2)"
                    );
                });
                Ok(Box::new(SocketTransport::new(mesh)?))
            }
            Err(e) => Err(Error::io("creating an io_uring", &e)),
        },
    }
}
