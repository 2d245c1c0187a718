//! Settings read from `DMSC_*` environment variables (see the README's table).

use dmsc_core::bootstrap::env::env_duration;
use dmsc_core::engine::EngineConfig;
use dmsc_core::plan::PlanConfig;
use dmsc_core::{Algo, Error, Result};
use dmsc_transports::tcp::Backend;
use std::time::Duration;

/// Everything a communicator can be tuned with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Engine settings: chunking, window, deadline, spinning, debug logging.
    pub engine: EngineConfig,
    /// Planner settings: algorithm override, pipeline segment size.
    pub plan: PlanConfig,
    /// TCP backend (`DMSC_TRANSPORT`).
    pub backend: Backend,
    /// Interface selection (`DMSC_SOCKET_IFNAME`).
    pub socket_ifname: Option<String>,
    /// Single-copy transfer of large chunks between ranks on one host by cross-memory
    /// attach (`DMSC_CMA`, default on; `0` keeps every byte on the sockets).
    pub cma: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            engine: EngineConfig::default(),
            plan: PlanConfig::default(),
            backend: Backend::Auto,
            socket_ifname: None,
            cma: true,
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn bytes_var(name: &str, default: usize) -> Result<usize> {
    match var(name) {
        None => Ok(default),
        Some(v) => crate::size::parse_size(&v)
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::invalid(format!("{name}={v} is not a positive size (e.g. 512K, 4M)"))
            }),
    }
}

impl Config {
    /// Read the `DMSC_*` variables of this process, with defaults for the unset ones.
    pub fn from_env() -> Result<Config> {
        let mut c = Config::default();
        let get = |n: &str| var(n);
        c.engine.timeout = env_duration(&get, "DMSC_TIMEOUT", c.engine.timeout)?;
        if c.engine.timeout.is_zero() {
            return Err(Error::invalid("DMSC_TIMEOUT must be positive"));
        }
        c.engine.chunk_bytes = bytes_var("DMSC_CHUNK_BYTES", c.engine.chunk_bytes)?
            .min(dmsc_core::wire::MAX_CHUNK as usize);
        c.engine.window = match var("DMSC_WINDOW") {
            None => c.engine.window,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&w| (1..=64).contains(&w))
                .ok_or_else(|| {
                    Error::invalid(format!("DMSC_WINDOW={v} is not a number in 1..=64"))
                })?,
        };
        if let Some(v) = var("DMSC_SPIN_US") {
            let us: u64 = v.parse().map_err(|_| {
                Error::invalid(format!(
                    "DMSC_SPIN_US={v} is not a whole number of microseconds"
                ))
            })?;
            c.engine.spin = Duration::from_micros(us);
        }
        if let Some(v) = var("DMSC_DEBUG") {
            c.engine.debug = matches!(
                v.to_ascii_uppercase().as_str(),
                "INFO" | "TRACE" | "DEBUG" | "1"
            );
        }
        if let Some(v) = var("DMSC_ALGO") {
            c.plan.algo = Some(Algo::parse(&v).ok_or_else(|| {
                Error::invalid(format!("DMSC_ALGO={v} is not one of ring, tree"))
            })?);
        }
        c.plan.segment_bytes = bytes_var("DMSC_SEGMENT_BYTES", c.plan.segment_bytes)?;
        if let Some(v) = var("DMSC_TRANSPORT") {
            c.backend = Backend::parse(&v)?;
        }
        c.socket_ifname = var("DMSC_SOCKET_IFNAME");
        if let Some(v) = var("DMSC_CMA") {
            c.cma = match v.to_ascii_lowercase().as_str() {
                "1" | "on" | "yes" | "true" => true,
                "0" | "off" | "no" | "false" => false,
                _ => {
                    return Err(Error::invalid(format!(
                        "DMSC_CMA={v} is not one of 1, 0, on, off"
                    )))
                }
            };
        }
        Ok(c)
    }
}
