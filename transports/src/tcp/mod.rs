//! TCP transport: one data and one control connection per peer, driven through io_uring
//! (crate `io-uring`) or, when io_uring is refused, plain nonblocking sockets and `poll(2)`.
//!
//! Backend choice: `DMSC_TRANSPORT=uring|socket` forces one; otherwise io_uring is tried and
//! the socket backend is taken when creating a ring fails with `EPERM` (a container's
//! seccomp policy) or `ENOSYS` (a kernel without io_uring), logged once per process.
//!
//! The modules, each using only those listed before it:
//! - `backend`: the [`Backend`] choice;
//! - `options`: [`MeshOptions`];
//! - `hello`: the wire form of the greeting (`Hello`);
//! - `dial`, `sockopt`: connecting with retries; socket options and modes;
//! - `greet`: authenticating and identifying the connections;
//! - `redial`: connecting failed paths again;
//! - `paths`: several paths per peer, with chunks sprayed over them;
//! - `conns`: the connections of one rank (`Mesh`);
//! - `socket`, `uring`: the two backends;
//! - `transport`: wrapping a mesh in its backend;
//! - `setup`: building the mesh ([`listen`], [`connect_listening`], [`connect_mesh`]).

mod backend;
mod conns;
mod dial;
mod greet;
pub(crate) mod hello;
mod options;
mod paths;
mod redial;
mod setup;
mod socket;
mod sockopt;
mod transport;
mod uring;
mod warn_limit;

pub use backend::Backend;
pub use options::MeshOptions;
pub use setup::{connect_listening, connect_mesh, listen, Exchange, Listening};
pub use socket::SocketTransport;
pub use uring::UringTransport;
