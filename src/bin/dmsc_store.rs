//! `dmsc-store`: a standalone rendezvous store, for jobs that want the store outside rank 0
//! (as one can run torch's `TCPStore` on its own).
//!
//! ```text
//! dmsc-store --addr 0.0.0.0:29500
//! ```
//!
//! Prints the address it listens on and serves until SIGINT or SIGTERM. Point the ranks at it
//! with `DMSC_STORE_ADDR=host:29500`. Clients must prove knowledge of `DMSC_SECRET` (give the
//! store and every rank the same); without it, the store is open to anyone who connects.

use dmsc_transports::store::StoreServer;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

const USAGE: &str = "usage: dmsc-store [--addr HOST:PORT]   (default 0.0.0.0:29500)";

fn parse_args() -> Result<Option<SocketAddr>, String> {
    let mut addr = String::from("0.0.0.0:29500");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--addr" => addr = args.next().ok_or("--addr needs a value (HOST:PORT)")?,
            s if s.starts_with("--addr=") => addr = s["--addr=".len()..].to_string(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr} resolves to no address"))?;
    Ok(Some(resolved))
}

/// Block SIGINT and SIGTERM in this thread (and so in every thread it starts afterwards), to
/// receive them with `sigwait` instead of dying.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data that sigemptyset initialises before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("dmsc-store: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The store logs the connections it refuses (and DMSC_SECRET's warnings) through it.
    if let Err(e) =
        dmsc::config::log_settings_from_env().and_then(|l| dmsc::logger::install(&l, None))
    {
        eprintln!("dmsc-store: {e}");
        return ExitCode::from(2);
    }
    let secret = match dmsc::config::secret_from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dmsc-store: {e}");
            return ExitCode::from(2);
        }
    };
    dmsc::config::warn_short_secret(secret.as_ref());
    if secret.is_none() {
        dmsc_transports::auth::warn_unauthenticated();
    }
    let set = block_signals();
    let server = match StoreServer::bind(addr, secret) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dmsc-store: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("dmsc-store listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set and `sig` a valid out-pointer; both signals
    // are blocked in every thread, so sigwait is the only way they are delivered.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc == 0 {
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        println!("dmsc-store: {name} received, stopping");
    }
    server.shutdown();
    ExitCode::SUCCESS
}
