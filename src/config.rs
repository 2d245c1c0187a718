//! Settings read from `DMSC_*` environment variables (see the README's table).

use crate::log_settings::{parse_subsys, LogLevel, LogSettings};
use dmsc_core::auth::{Secret, MIN_ADVISED_SECRET};
use dmsc_core::bootstrap::env::env_duration;
use dmsc_core::engine::EngineConfig;
use dmsc_core::plan::PlanConfig;
use dmsc_core::spray::{Mode, SprayConfig};
use dmsc_core::{Algo, Error, Result};
use dmsc_transports::connect::{Choice, DmabufSource};
use dmsc_transports::rdma::verbs::VerbsProvider;
use dmsc_transports::shm::ShmOptions;
use dmsc_transports::tcp::Backend;
use std::sync::Arc;
use std::time::Duration;

/// Everything a communicator can be tuned with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Logging: level, subsystems and destination (`DMSC_DEBUG`, `DMSC_DEBUG_SUBSYS`,
    /// `DMSC_DEBUG_FILE`); used by the first communicator of a process to set up the logger.
    pub log: LogSettings,
    /// Engine settings: chunking, window, deadline, spinning.
    pub engine: EngineConfig,
    /// Planner settings: algorithm override, pipeline segment size.
    pub plan: PlanConfig,
    /// TCP backend (`DMSC_TRANSPORT=uring|socket`; `auto` otherwise).
    pub backend: Backend,
    /// Which transport the ranks use (`DMSC_TRANSPORT`: `auto`, `shm`, `tcp`, or a TCP
    /// backend, which implies `tcp`).
    pub transport: Choice,
    /// Offer shared memory between ranks of one host (`DMSC_SHM`, default on; `0` keeps
    /// them on TCP).
    pub shm: bool,
    /// Bytes of each shared-memory data ring (`DMSC_SHM_RING`, a power of two).
    pub shm_ring: usize,
    /// Interface selection (`DMSC_SOCKET_IFNAME`).
    pub socket_ifname: Option<String>,
    /// Single-copy transfer of large chunks between ranks on one host by cross-memory
    /// attach (`DMSC_CMA`, default on; `0` keeps every byte on the sockets).
    pub cma: bool,
    /// The job's secret (`DMSC_SECRET`): every connection, to the store and between ranks,
    /// proves knowledge of it before anything else is read. `None`: connections are not
    /// authenticated (every rank and the store must then have none). Its `Debug` never
    /// shows it. A communicator joined through a unique id uses the id's secret instead.
    pub secret: Option<Secret>,
    /// Paths per pair of ranks (`DMSC_PATHS`, 1 to 16). `None`: one per interface that
    /// `DMSC_SOCKET_IFNAME` names (so one unless it names several).
    pub paths: Option<usize>,
    /// How chunks are sprayed over several paths (`DMSC_SPRAY`, `DMSC_SPRAY_SEGMENT`).
    pub spray: SprayConfig,
    /// `DMSC_WINDOW` was given (else several paths widen the default window).
    pub window_set: bool,
    /// `DMSC_SPIN_US` was given (else the facade picks the spin when it connects).
    pub spin_set: bool,
    /// The chunk size was chosen (`DMSC_CHUNK_BYTES`, the C ABI's `chunkBytes`; set it when
    /// choosing `engine.chunk_bytes` in code, unless the value differs from the default):
    /// else shared memory takes its own chunk size when it connects.
    pub chunk_set: bool,
    /// Measure the links within and between hosts when a communicator spans several hosts
    /// (`DMSC_TOPO_PROBE`, default on; `0` leaves the cost model's defaults in place).
    pub topo_probe: bool,
    /// The verbs of the RDMA transport, and how it exports GPU memory as dma-bufs, instead of
    /// the system's libibverbs and the CUDA driver (`None`, the default). For tests over the
    /// FAKE fabric (`dmsc_transports::rdma::fake`), or a provider of one's own.
    pub verbs: Option<VerbsSetup>,
}

/// Verbs and a dma-buf exporter given to the RDMA transport ([`Config::verbs`]).
#[derive(Clone)]
pub struct VerbsSetup {
    /// The verbs (devices, contexts, queue pairs).
    pub provider: Arc<dyn VerbsProvider>,
    /// How GPU memory becomes dma-bufs; `None`: the CUDA driver's export.
    pub dmabuf: Option<DmabufSource>,
}

impl std::fmt::Debug for VerbsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsSetup")
            .field("provider", &self.provider.name())
            .field("dmabuf", &self.dmabuf.as_ref().map(|_| "given"))
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log: LogSettings::default(),
            engine: EngineConfig::default(),
            plan: PlanConfig::default(),
            backend: Backend::Auto,
            transport: Choice::Auto,
            shm: true,
            shm_ring: ShmOptions::DEFAULT_DATA_RING,
            socket_ifname: None,
            cma: true,
            secret: None,
            paths: None,
            spray: SprayConfig::default(),
            window_set: false,
            spin_set: false,
            chunk_set: false,
            topo_probe: true,
            verbs: None,
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

/// An on/off variable: `1`, `on`, `yes`, `true` or `0`, `off`, `no`, `false`.
fn flag_var(name: &str, default: bool) -> Result<bool> {
    match var(name) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "on" | "yes" | "true" => Ok(true),
            "0" | "off" | "no" | "false" => Ok(false),
            _ => Err(Error::invalid(format!(
                "{name}={v} is not one of 1, 0, on, off"
            ))),
        },
    }
}

/// The job's secret from `DMSC_SECRET` (its bytes as given; unset, empty or blank: none).
/// A secret shorter than 16 bytes works; [`warn_short_secret`] says so.
pub fn secret_from_env() -> Result<Option<Secret>> {
    use std::os::unix::ffi::OsStrExt;
    let Some(raw) = std::env::var_os("DMSC_SECRET") else {
        return Ok(None);
    };
    let bytes = raw.as_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Secret::new(bytes).map(Some)
}

/// Warn once per process when `secret` has fewer than 16 bytes. Called once the logger is set
/// up (by the first communicator, or the store), so that the warning reaches it.
pub fn warn_short_secret(secret: Option<&Secret>) {
    let Some(len) = secret.map(Secret::len).filter(|&n| n < MIN_ADVISED_SECRET) else {
        return;
    };
    static SHORT: std::sync::Once = std::sync::Once::new();
    SHORT.call_once(|| {
        log::warn!(
            target: dmsc_core::subsys::INIT,
            "DMSC_SECRET has only {len} bytes; use at least {MIN_ADVISED_SECRET} random bytes \
             (e.g. `openssl rand -hex 32`)"
        )
    });
}

/// `DMSC_HEARTBEAT_TIMEOUT`: seconds within which a silent peer is declared lost; `0` turns
/// heartbeats off.
fn heartbeat_var(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Duration>> {
    let t = env_duration(
        get,
        "DMSC_HEARTBEAT_TIMEOUT",
        EngineConfig::DEFAULT_HEARTBEAT_TIMEOUT,
    )?;
    if t.is_zero() {
        return Ok(None);
    }
    if t < Duration::from_millis(50) {
        return Err(Error::invalid(format!(
            "DMSC_HEARTBEAT_TIMEOUT={} s is below the 0.05 s minimum (0 turns heartbeats off)",
            t.as_secs_f64()
        )));
    }
    Ok(Some(t))
}

/// The logging settings `DMSC_DEBUG`, `DMSC_DEBUG_SUBSYS` and `DMSC_DEBUG_FILE` give, from
/// `get` (see [`crate::log_settings`]); unset ones keep their defaults.
fn log_from(get: &dyn Fn(&str) -> Option<String>) -> Result<LogSettings> {
    let mut l = LogSettings::default();
    if let Some(v) = get("DMSC_DEBUG") {
        l.level = LogLevel::parse(&v)?;
    }
    if let Some(v) = get("DMSC_DEBUG_SUBSYS") {
        l.subsys = parse_subsys(&v)?;
    }
    l.file = get("DMSC_DEBUG_FILE");
    Ok(l)
}

/// The logging settings of this process's environment alone (for a launcher or a store,
/// which set up the logger without a communicator's [`Config`]).
pub fn log_settings_from_env() -> Result<LogSettings> {
    log_from(&|n: &str| var(n))
}

impl Config {
    /// Read the `DMSC_*` variables of this process, with defaults for the unset ones.
    pub fn from_env() -> Result<Config> {
        let mut c = Config::default();
        let get = |n: &str| var(n);
        c.log = log_from(&get)?;
        c.engine.timeout = env_duration(&get, "DMSC_TIMEOUT", c.engine.timeout)?;
        if c.engine.timeout.is_zero() {
            return Err(Error::invalid("DMSC_TIMEOUT must be positive"));
        }
        c.engine.heartbeat_timeout = heartbeat_var(&get)?;
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
        if let Some(v) = var("DMSC_ALGO") {
            c.plan.algo = Some(Algo::parse(&v).ok_or_else(|| {
                Error::invalid(format!("DMSC_ALGO={v} is not one of {}", Algo::NAMES))
            })?);
        }
        c.plan.segment_bytes = bytes_var("DMSC_SEGMENT_BYTES", c.plan.segment_bytes)?;
        if let Some(v) = var("DMSC_TRANSPORT") {
            (c.transport, c.backend) = Choice::parse(&v)?;
        }
        c.shm = flag_var("DMSC_SHM", c.shm)?;
        c.topo_probe = flag_var("DMSC_TOPO_PROBE", c.topo_probe)?;
        c.shm_ring = bytes_var("DMSC_SHM_RING", c.shm_ring)?;
        if !c.shm_ring.is_power_of_two() || !(64 << 10..=1 << 30).contains(&c.shm_ring) {
            return Err(Error::invalid(format!(
                "DMSC_SHM_RING={} is not a power of two between 64K and 1G",
                c.shm_ring
            )));
        }
        c.socket_ifname = var("DMSC_SOCKET_IFNAME");
        c.cma = flag_var("DMSC_CMA", c.cma)?;
        c.secret = secret_from_env()?;
        c.engine.checksum = flag_var("DMSC_CHECKSUM", c.engine.checksum)?;
        // Read by the reduction kernels themselves (core/src/reduce/isa.rs); checked here,
        // where a wrong value can still be reported.
        if let Some(v) = var("DMSC_ISA") {
            if !dmsc_core::reduce::isa_setting_is_valid(&v) {
                return Err(Error::invalid(format!(
                    "DMSC_ISA={v} is not one of base, auto (the default: AVX2 when the CPU has it)"
                )));
            }
        }
        if let Some(v) = var("DMSC_PATHS") {
            c.paths = Some(
                v.parse::<usize>()
                    .ok()
                    .filter(|&k| (1..=dmsc_core::spray::wire::MAX_PATHS).contains(&k))
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "DMSC_PATHS={v} is not a number of paths in 1..={}",
                            dmsc_core::spray::wire::MAX_PATHS
                        ))
                    })?,
            );
        }
        if let Some(v) = var("DMSC_SPRAY") {
            c.spray.mode = Mode::parse(&v)?;
        }
        c.spray.segment_bytes = bytes_var("DMSC_SPRAY_SEGMENT", c.spray.segment_bytes)?
            .min(dmsc_core::wire::MAX_CHUNK as usize);
        c.window_set = var("DMSC_WINDOW").is_some();
        c.spin_set = var("DMSC_SPIN_US").is_some();
        c.chunk_set = var("DMSC_CHUNK_BYTES").is_some();
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(v: Option<&str>) -> Result<Option<Duration>> {
        heartbeat_var(&|k: &str| {
            assert_eq!(k, "DMSC_HEARTBEAT_TIMEOUT");
            v.map(str::to_string)
        })
    }

    fn log(vars: &[(&str, &str)]) -> Result<LogSettings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        log_from(&move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn logging_variables_defaults_values_and_errors() {
        assert_eq!(log(&[]).unwrap(), LogSettings::default());
        let l = log(&[
            ("DMSC_DEBUG", "trace"),
            ("DMSC_DEBUG_SUBSYS", "^COLL"),
            ("DMSC_DEBUG_FILE", "/tmp/d.%h.%p"),
        ])
        .unwrap();
        assert_eq!(l.level, LogLevel::Trace);
        let coll = dmsc_core::subsys::Subsys::named("COLL").unwrap();
        assert!(!l.subsys.contains(coll));
        assert_eq!(l.file.as_deref(), Some("/tmp/d.%h.%p"));
        assert_eq!(log(&[("DMSC_DEBUG", "1")]).unwrap().level, LogLevel::Info);
        let e = log(&[("DMSC_DEBUG", "LOUD")]).unwrap_err().to_string();
        assert!(
            e.contains("DMSC_DEBUG=LOUD") && e.contains("VERSION, WARN, INFO, TRACE"),
            "{e}"
        );
        let e = log(&[("DMSC_DEBUG_SUBSYS", "NET,DISK")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DMSC_DEBUG_SUBSYS") && e.contains("DISK"), "{e}");
    }

    #[test]
    fn heartbeat_timeout_default_off_and_bounds() {
        assert_eq!(heartbeat(None).unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(
            heartbeat(Some("2.5")).unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(heartbeat(Some("0")).unwrap(), None);
        let e = heartbeat(Some("0.01")).unwrap_err().to_string();
        assert!(
            e.contains("DMSC_HEARTBEAT_TIMEOUT") && e.contains("0.05"),
            "{e}"
        );
        let e = heartbeat(Some("soon")).unwrap_err().to_string();
        assert!(e.contains("DMSC_HEARTBEAT_TIMEOUT=soon"), "{e}");
    }
}
