//! What dmsc's logger prints and where: the values of `DMSC_DEBUG`, `DMSC_DEBUG_SUBSYS` and
//! `DMSC_DEBUG_FILE`, read as NCCL reads `NCCL_DEBUG`, `NCCL_DEBUG_SUBSYS` and
//! `NCCL_DEBUG_FILE` (the variables themselves are read in [`crate::config`]).
//!
//! - **Level** (`DMSC_DEBUG`, case-insensitive): `VERSION` prints the version line only (no
//!   warnings, as NCCL's `VERSION` is below `WARN`); `WARN` prints warnings and errors;
//!   `INFO` adds the init banner and operational lines (each operation's start and end);
//!   `TRACE` adds the finest lines (each connection). Unset, dmsc prints warnings (`WARN`),
//!   as it always did; NCCL prints nothing then. Unlike NCCL, `WARN` does not print the
//!   version line, so a healthy job prints nothing. `1` means `INFO` and `0` the default,
//!   for the boolean this variable once was.
//! - **Subsystems** (`DMSC_DEBUG_SUBSYS`): a comma-separated list of the names in
//!   [`dmsc_core::subsys::NAMES`] or `ALL`; a leading `^` takes the complement ("all but").
//!   The filter applies to `INFO` and `TRACE` lines; warnings and errors always pass, as in
//!   NCCL. Unset: `ALL` (NCCL's default is `INIT,BOOTSTRAP,ENV`; dmsc's INFO output is
//!   small, and each operation's start and end is what a timeout is diagnosed with).
//! - **File** (`DMSC_DEBUG_FILE`): a path in which `%h` becomes the host name and `%p` the
//!   process id (`%%` a `%`); unset: standard error.

use dmsc_core::subsys::{Subsys, NAMES};
use dmsc_core::{Error, Result};

/// How much dmsc logs (`DMSC_DEBUG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// The version line only.
    Version,
    /// Warnings and errors (the default).
    Warn,
    /// Warnings, errors and operational information: the init banner, each operation.
    Info,
    /// Everything, down to each connection.
    Trace,
}

impl LogLevel {
    /// Parse a `DMSC_DEBUG` value (case-insensitive): `VERSION`, `WARN`, `INFO`, `TRACE`, or
    /// `1` (`INFO`) and `0` (`WARN`) as the boolean it once was.
    pub fn parse(v: &str) -> Result<LogLevel> {
        match v.trim().to_ascii_uppercase().as_str() {
            "VERSION" => Ok(LogLevel::Version),
            "WARN" | "0" => Ok(LogLevel::Warn),
            "INFO" | "1" => Ok(LogLevel::Info),
            "TRACE" => Ok(LogLevel::Trace),
            _ => Err(Error::invalid(format!(
                "DMSC_DEBUG={v} is not one of VERSION, WARN, INFO, TRACE (or 1 for INFO)"
            ))),
        }
    }

    /// The most verbose level of the `log` crate this level lets through.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Version => log::LevelFilter::Off,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Parse a `DMSC_DEBUG_SUBSYS` value: names from [`NAMES`] or `ALL`, comma-separated,
/// case-insensitive; a leading `^` means every subsystem but those listed.
pub fn parse_subsys(v: &str) -> Result<Subsys> {
    let t = v.trim();
    let (invert, list) = match t.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let mut set = Subsys::NONE;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let one = Subsys::named(name).ok_or_else(|| {
            Error::invalid(format!(
                "DMSC_DEBUG_SUBSYS={v}: {name} is not a subsystem; the accepted names are ALL, {}",
                NAMES.join(", ")
            ))
        })?;
        set = set.union(one);
    }
    if set == Subsys::NONE {
        return Err(Error::invalid(format!(
            "DMSC_DEBUG_SUBSYS={v} names no subsystem; the accepted names are ALL, {}",
            NAMES.join(", ")
        )));
    }
    Ok(if invert { set.complement() } else { set })
}

/// The file name `DMSC_DEBUG_FILE`'s `pattern` gives on host `host` for process `pid`: `%h`
/// becomes the host name, `%p` the process id and `%%` a `%`; any other `%` stays as it is.
pub fn expand_file(pattern: &str, host: &str, pid: u32) -> String {
    let mut out = String::with_capacity(pattern.len() + host.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(&pid.to_string()),
            Some('%') => out.push('%'),
            _ => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// Everything the logger is set up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// `DMSC_DEBUG` (default [`LogLevel::Warn`]).
    pub level: LogLevel,
    /// `DMSC_DEBUG_SUBSYS` (default every subsystem).
    pub subsys: Subsys,
    /// `DMSC_DEBUG_FILE`, its `%h` and `%p` not yet substituted (default: standard error).
    pub file: Option<String>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: LogLevel::Warn,
            subsys: Subsys::ALL,
            file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_as_nccl_case_insensitive_with_the_old_boolean() {
        assert_eq!(LogLevel::parse("version").unwrap(), LogLevel::Version);
        assert_eq!(LogLevel::parse("WARN").unwrap(), LogLevel::Warn);
        assert_eq!(LogLevel::parse("Info").unwrap(), LogLevel::Info);
        assert_eq!(LogLevel::parse(" trace ").unwrap(), LogLevel::Trace);
        assert_eq!(LogLevel::parse("1").unwrap(), LogLevel::Info);
        assert_eq!(LogLevel::parse("0").unwrap(), LogLevel::Warn);
        assert!(LogLevel::Version < LogLevel::Warn && LogLevel::Info < LogLevel::Trace);
        assert_eq!(LogLevel::Version.filter(), log::LevelFilter::Off);
        assert_eq!(LogLevel::Trace.filter(), log::LevelFilter::Trace);
        let e = LogLevel::parse("verbose").unwrap_err().to_string();
        assert!(
            e.contains("DMSC_DEBUG=verbose") && e.contains("VERSION, WARN, INFO, TRACE"),
            "{e}"
        );
    }

    #[test]
    fn subsystems_lists_all_and_the_caret() {
        let net = Subsys::named("NET").unwrap();
        let coll = Subsys::named("COLL").unwrap();
        assert_eq!(parse_subsys("NET").unwrap(), net);
        assert_eq!(parse_subsys("net, coll").unwrap(), net.union(coll));
        assert_eq!(parse_subsys("ALL").unwrap(), Subsys::ALL);
        let but = parse_subsys("^NET,COLL").unwrap();
        assert!(!but.contains(net) && !but.contains(coll));
        assert!(but.contains(Subsys::named("INIT").unwrap()));
        assert_eq!(but.union(net).union(coll), Subsys::ALL);
        assert_eq!(parse_subsys("^ALL").unwrap(), Subsys::NONE);
        let e = parse_subsys("INIT,NETWORK").unwrap_err().to_string();
        assert!(
            e.contains("DMSC_DEBUG_SUBSYS=INIT,NETWORK")
                && e.contains("NETWORK is not a subsystem")
                && e.contains("ALL, INIT, BOOTSTRAP, NET"),
            "{e}"
        );
        assert!(parse_subsys("^").is_err() && parse_subsys(",").is_err());
    }

    #[test]
    fn file_pattern_takes_host_and_pid() {
        assert_eq!(
            expand_file("/tmp/dmsc.%h.%p.log", "node-1", 4242),
            "/tmp/dmsc.node-1.4242.log"
        );
        assert_eq!(expand_file("%p-%p", "h", 7), "7-7");
        assert_eq!(expand_file("100%%-%x-%", "h", 1), "100%-%x-%");
        assert_eq!(expand_file("plain", "h", 1), "plain");
    }
}
