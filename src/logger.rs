//! dmsc's own logger: the `log` records of dmsc's crates, filtered by level and subsystem and
//! written one line each in NCCL's shape, `host:pid:tid [rank] DMSC LEVEL SUBSYS: message`,
//! to standard error or to `DMSC_DEBUG_FILE` (see [`crate::log_settings`]).
//!
//! [`install`] sets it up once per process, from the settings of the first communicator
//! created (or of a launcher or store that serves connections). It never replaces a logger
//! the application installed: when `log::set_boxed_logger` fails, that logger stays and gets
//! dmsc's records, which name their subsystem as their target (`dmsc::NET`, see
//! [`dmsc_core::subsys`]). Records of other crates are not printed by this logger.
//!
//! A front end with logging of its own (the Python package routes to Python's `logging`)
//! hands the lines to a [`LineSink`] instead of standard error, with [`route_to`]; a
//! `DMSC_DEBUG_FILE` still wins. The filter stays here, so a record `DMSC_DEBUG` drops never
//! reaches the sink.

use crate::log_settings::{expand_file, LogLevel, LogSettings};
use dmsc_core::subsys::Subsys;
use dmsc_core::{Error, Rank, Result};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The rank shown in a line made on a thread no communicator marked
/// ([`dmsc_core::log_rank`]): that of the first communicator this process created.
static RANK: AtomicUsize = AtomicUsize::new(NO_RANK);
const NO_RANK: usize = usize::MAX;

/// dmsc's logger, once [`install`] made it; [`OURS`] says whether it became the process's.
static LOGGER: OnceLock<DmscLogger> = OnceLock::new();
/// Set by the first [`install`] that got as far as `log::set_logger`: whether it succeeded.
static OURS: OnceLock<bool> = OnceLock::new();

/// A destination of whole lines that is not a byte stream, such as a language's logging
/// module.
pub trait LineSink: Send + Sync {
    /// One line in NCCL's shape, without its newline, of `level` (`Info` for the version
    /// line), from subsystem `subsys` (`None` for lines of no subsystem).
    fn line(&self, level: log::Level, subsys: Option<&str>, line: &str);
}

/// The sink [`route_to`] set, if any.
static SINK: OnceLock<Box<dyn LineSink>> = OnceLock::new();

/// Send dmsc's lines to `sink` rather than standard error (a `DMSC_DEBUG_FILE` still gets
/// them). Takes effect for the logger [`install`] makes, so call it before the first
/// communicator; false if a sink was already set or the logger already made.
pub fn route_to(sink: Box<dyn LineSink>) -> bool {
    LOGGER.get().is_none() && SINK.set(sink).is_ok()
}

/// Where a logger's lines go.
enum Dest {
    /// A byte stream: standard error or the `DMSC_DEBUG_FILE`.
    Stream(Mutex<Box<dyn Write + Send>>),
    /// The sink of [`route_to`].
    Sink(&'static dyn LineSink),
}

/// The logger: the filter and the destination, and the host name of every line.
struct DmscLogger {
    level: LogLevel,
    subsys: Subsys,
    host: String,
    out: Dest,
}

impl DmscLogger {
    fn passes(&self, level: log::Level, target: &str) -> bool {
        if !target.starts_with("dmsc") || level > self.level.filter() {
            return false;
        }
        if level <= log::Level::Warn {
            return true;
        }
        match Subsys::of_target(target) {
            Some(s) => self.subsys.contains(s),
            None => self.subsys == Subsys::ALL,
        }
    }

    /// One whole line, written with a single call so that threads do not interleave.
    /// `subsys` is the subsystem's name, if the record has one.
    fn write_line(
        &self,
        level: log::Level,
        label: &str,
        subsys: Option<&str>,
        args: &std::fmt::Arguments<'_>,
    ) {
        let shown = subsys.map(|s| format!("{s}: ")).unwrap_or_default();
        let line = format!("{} DMSC {label} {shown}{args}", prefix(&self.host));
        match &self.out {
            Dest::Stream(out) => {
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                let _ = out.write_all(format!("{line}\n").as_bytes());
                let _ = out.flush();
            }
            Dest::Sink(sink) => sink.line(level, subsys, &line),
        }
    }
}

impl log::Log for DmscLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        self.passes(m.level(), m.target())
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.passes(r.level(), r.target()) {
            return;
        }
        let label = match r.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARN",
            log::Level::Info => "INFO",
            log::Level::Debug | log::Level::Trace => "TRACE",
        };
        let subsys = match r.target().strip_prefix("dmsc::") {
            Some(s) if Subsys::of_target(r.target()).is_some() => Some(s),
            _ => None,
        };
        self.write_line(r.level(), label, subsys, r.args());
    }

    fn flush(&self) {
        if let Dest::Stream(out) = &self.out {
            let _ = out.lock().unwrap_or_else(|p| p.into_inner()).flush();
        }
    }
}

/// `host:pid:tid [rank]`, NCCL's prefix: the rank marked on this thread, else the process's
/// first (`[-]` before the process has a rank).
fn prefix(host: &str) -> String {
    // SAFETY: gettid takes no arguments, cannot fail and touches no memory of ours.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let pid = std::process::id();
    let rank = dmsc_core::log_rank::current().unwrap_or_else(|| RANK.load(Ordering::Relaxed));
    match rank {
        NO_RANK => format!("{host}:{pid}:{tid} [-]"),
        r => format!("{host}:{pid}:{tid} [{r}]"),
    }
}

/// This host's name (the kernel's `hostname`), or `localhost` when it cannot be read.
pub fn hostname() -> String {
    dmsc_transports::shm::host_name()
}

/// Set up dmsc's logger with `settings`, once per process; later calls only record `rank`
/// if none was yet. `rank` is this process's rank in the communicator being created (`None`
/// for a launcher or a store). Fails only when `DMSC_DEBUG_FILE` cannot be opened, naming it.
/// When the application already installed a logger, that one stays and nothing is changed.
/// With `DMSC_DEBUG=VERSION`, writes the version line.
pub fn install(settings: &LogSettings, rank: Option<Rank>) -> Result<()> {
    if let Some(r) = rank {
        let _ = RANK.compare_exchange(NO_RANK, r, Ordering::Relaxed, Ordering::Relaxed);
    }
    let logger = match LOGGER.get() {
        Some(l) => l,
        None => {
            let host = hostname();
            let out = open(settings, &host)?;
            LOGGER.get_or_init(|| DmscLogger {
                level: settings.level,
                subsys: settings.subsys,
                host,
                out,
            })
        }
    };
    let ours = *OURS.get_or_init(|| {
        let ok = log::set_logger(logger).is_ok();
        if ok {
            log::set_max_level(logger.level.filter());
        }
        ok
    });
    // The version line, once, by the first communicator (a launcher or a store has none).
    if ours && rank.is_some() && logger.level == LogLevel::Version {
        static SHOWN: std::sync::Once = std::sync::Once::new();
        SHOWN.call_once(|| {
            let version = format_args!("dmsc {}", crate::VERSION);
            logger.write_line(log::Level::Info, "VERSION", None, &version)
        });
    }
    Ok(())
}

/// Where the lines go: `DMSC_DEBUG_FILE` with `%h` and `%p` substituted (appended to), else
/// the sink of [`route_to`], else standard error.
fn open(settings: &LogSettings, host: &str) -> Result<Dest> {
    let stream = |w: Box<dyn Write + Send>| Dest::Stream(Mutex::new(w));
    let Some(pattern) = &settings.file else {
        return Ok(match SINK.get() {
            Some(sink) => Dest::Sink(sink.as_ref()),
            None => stream(Box::new(std::io::stderr())),
        });
    };
    let path = expand_file(pattern, host, std::process::id());
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        // A setting that cannot be used, not a failure of the system: a launcher must not take
        // its ENOENT for a missing program.
        .map_err(|e| {
            Error::invalid(format!(
                "DMSC_DEBUG_FILE={pattern}: cannot open {path}: {e}"
            ))
        })?;
    Ok(stream(Box::new(f)))
}

/// Whether dmsc's logger is the process's logger (false before [`install`], or when the
/// application had installed its own).
pub fn is_installed() -> bool {
    OURS.get().copied().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_settings::parse_subsys;
    use log::Log;
    use std::sync::Arc;

    /// A destination the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logger(level: LogLevel, subsys: &str) -> (DmscLogger, Buf) {
        let buf = Buf::default();
        let l = DmscLogger {
            level,
            subsys: parse_subsys(subsys).unwrap(),
            host: "node-7".into(),
            out: Dest::Stream(Mutex::new(Box::new(buf.clone()))),
        };
        (l, buf)
    }

    fn emit(l: &DmscLogger, level: log::Level, target: &str, msg: &str) {
        l.log(
            &log::Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{msg}"))
                .build(),
        );
    }

    #[test]
    fn filters_by_level_and_subsystem_and_warnings_always_pass() {
        let (l, buf) = logger(LogLevel::Info, "^NET");
        emit(&l, log::Level::Info, dmsc_core::subsys::COLL, "op end");
        emit(&l, log::Level::Info, dmsc_core::subsys::NET, "listening");
        emit(&l, log::Level::Warn, dmsc_core::subsys::NET, "refused");
        emit(&l, log::Level::Trace, dmsc_core::subsys::COLL, "finest");
        emit(&l, log::Level::Error, "some_other_crate", "not ours");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let pid = std::process::id();
        assert!(
            lines[0].starts_with(&format!("node-7:{pid}:"))
                && lines[0].ends_with(" DMSC INFO COLL: op end"),
            "{text}"
        );
        assert!(lines[1].ends_with(" DMSC WARN NET: refused"), "{text}");
        let rank = lines[0].split(' ').nth(1).unwrap();
        assert!(rank.starts_with('[') && rank.ends_with(']'), "{text}");
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
        let settings = LogSettings {
            file: Some("/nonexistent-dir/dmsc.%h.log".into()),
            ..LogSettings::default()
        };
        let e = open(&settings, "node-7").err().unwrap().to_string();
        assert!(
            e.contains("DMSC_DEBUG_FILE=/nonexistent-dir/dmsc.%h.log")
                && e.contains("/nonexistent-dir/dmsc.node-7.log"),
            "{e}"
        );
    }

    #[test]
    fn version_level_lets_no_record_through_and_trace_all() {
        let (l, buf) = logger(LogLevel::Version, "ALL");
        emit(&l, log::Level::Warn, dmsc_core::subsys::INIT, "w");
        assert!(buf.0.lock().unwrap().is_empty());
        let (l, buf) = logger(LogLevel::Trace, "NET");
        emit(&l, log::Level::Trace, dmsc_core::subsys::NET, "conn up");
        emit(&l, log::Level::Debug, dmsc_core::subsys::SHM, "shm");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(" DMSC TRACE NET: conn up"), "{text}");
    }

    /// A sink that keeps what it got.
    #[derive(Default)]
    struct Kept(Mutex<Vec<(log::Level, Option<String>, String)>>);
    impl LineSink for Kept {
        fn line(&self, level: log::Level, subsys: Option<&str>, line: &str) {
            let entry = (level, subsys.map(str::to_string), line.to_string());
            self.0.lock().unwrap().push(entry);
        }
    }

    #[test]
    fn a_sink_gets_whole_filtered_lines_with_their_level_and_subsystem() {
        let kept: &'static Kept = Box::leak(Box::default());
        let l = DmscLogger {
            level: LogLevel::Info,
            subsys: parse_subsys("ALL").unwrap(),
            host: "node-7".into(),
            out: Dest::Sink(kept),
        };
        emit(&l, log::Level::Info, dmsc_core::subsys::INIT, "banner");
        emit(
            &l,
            log::Level::Trace,
            dmsc_core::subsys::NET,
            "filtered out",
        );
        emit(&l, log::Level::Warn, "dmsc", "no subsystem");
        let got = kept.0.lock().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            (got[0].0, got[0].1.as_deref()),
            (log::Level::Info, Some("INIT"))
        );
        assert!(got[0].2.starts_with("node-7:") && got[0].2.ends_with(" DMSC INFO INIT: banner"));
        assert!(!got[0].2.ends_with('\n'));
        assert_eq!((got[1].0, got[1].1.as_deref()), (log::Level::Warn, None));
        assert!(got[1].2.ends_with(" DMSC WARN no subsystem"), "{got:?}");
    }
}
