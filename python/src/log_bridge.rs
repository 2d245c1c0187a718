//! dmsc's log lines into Python's `logging`.
//!
//! dmsc's logger (`dmsc::logger`) filters records by `DMSC_DEBUG` and `DMSC_DEBUG_SUBSYS`
//! and shapes each line as NCCL does; in Python the lines then go to the logger
//! `dmsc.<SUBSYSTEM>` (`dmsc.INIT`, `dmsc.NET`, ...; plain `dmsc` for lines of no subsystem)
//! at the matching level (ERROR, WARNING, INFO, and DEBUG for TRACE), so the application's
//! handlers, formatters and levels apply. When no handler would get the record (logging is
//! not configured), the line is written to standard error as a C program gets it, rather
//! than to `logging`'s last-resort handler, which drops everything below WARNING. When
//! `DMSC_DEBUG` is set and the `dmsc` logger has no level of its own, importing the module
//! gives it the matching one, so that `DMSC_DEBUG=INFO` is not undone by a root logger left
//! at WARNING. A `DMSC_DEBUG_FILE` still gets the lines instead.
//!
//! Threads that log never take the GIL: a line goes to a channel, and one thread delivers
//! the lines to `logging`, holding the GIL only while it does. A thread that logs while
//! another holds the GIL and waits for it (a progress thread joined by `destroy`) thus
//! cannot deadlock, which pyo3-log's direct calls could. At interpreter exit (`atexit`) the
//! pending lines are delivered and later ones go to standard error. A forked child (which
//! has no delivering thread) writes its lines to standard error too, and its exit hook does
//! not wait.

use pyo3::prelude::*;
use pyo3::types::PyCFunction;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::time::Duration;

/// One line on its way to `logging`.
struct Line {
    level: log::Level,
    subsys: Option<String>,
    text: String,
}

enum Msg {
    Line(Line),
    /// Answer once every line sent before has been delivered.
    Flush(SyncSender<()>),
}

/// Set at interpreter exit: lines go to standard error from then on.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// The sink handed to dmsc's logger.
struct PySink {
    tx: Sender<Msg>,
    /// The process that started the delivering thread: a forked child has no such thread,
    /// so its lines go to standard error.
    pid: u32,
}

impl dmsc::logger::LineSink for PySink {
    fn line(&self, level: log::Level, subsys: Option<&str>, text: &str) {
        let line = Line {
            level,
            subsys: subsys.map(str::to_string),
            text: text.to_string(),
        };
        let forked = std::process::id() != self.pid;
        if forked || STOPPED.load(Ordering::Acquire) || self.tx.send(Msg::Line(line)).is_err() {
            eprintln!("{text}");
        }
    }
}

/// `logging`'s number for a level.
fn py_level(level: log::Level) -> u32 {
    match level {
        log::Level::Error => 40,
        log::Level::Warn => 30,
        log::Level::Info => 20,
        log::Level::Debug | log::Level::Trace => 10,
    }
}

/// Hand `line` to its `logging` logger, or to standard error when no handler would get it.
fn deliver(py: Python<'_>, logging: &Bound<'_, PyModule>, line: &Line) -> PyResult<()> {
    let name = match &line.subsys {
        Some(s) => format!("dmsc.{s}"),
        None => "dmsc".to_string(),
    };
    let logger = logging.call_method1("getLogger", (name,))?;
    if logger.call_method0("hasHandlers")?.is_truthy()? {
        logger.call_method1("log", (py_level(line.level), &line.text))?;
    } else {
        py.detach(|| eprintln!("{}", line.text));
    }
    Ok(())
}

/// The delivering thread: lines in order, the GIL held per batch. Once the exit hook's flush
/// is answered, the interpreter may be finalizing: later lines go to standard error, and the
/// GIL is never taken again.
fn drain(rx: Receiver<Msg>) {
    let mut exited = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        if exited {
            for msg in batch {
                match msg {
                    Msg::Line(line) => eprintln!("{}", line.text),
                    Msg::Flush(ack) => drop(ack.send(())),
                }
            }
            continue;
        }
        Python::attach(|py| {
            let logging = py.import("logging");
            for msg in batch {
                match msg {
                    Msg::Line(line) if exited => eprintln!("{}", line.text),
                    Msg::Line(line) => {
                        let done = match &logging {
                            Ok(l) => deliver(py, l, &line),
                            Err(e) => Err(e.clone_ref(py)),
                        };
                        if let Err(e) = done {
                            eprintln!("{} (logging failed: {e})", line.text);
                        }
                    }
                    Msg::Flush(ack) => {
                        exited |= STOPPED.load(Ordering::Acquire);
                        let _ = ack.send(());
                    }
                }
            }
        });
    }
}

/// Route dmsc's lines to `logging` (see the module docs), give the `dmsc` logger the level
/// `DMSC_DEBUG` asks for, and flush at exit. Called once, by the module's initialisation.
pub fn install(py: Python<'_>) -> PyResult<()> {
    let (tx, rx) = channel();
    let flush_tx = tx.clone();
    let pid = std::process::id();
    if !dmsc::logger::route_to(Box::new(PySink { tx, pid })) {
        // A communicator was made before this module was imported (not possible from
        // Python) or the module was initialised twice: keep what is there.
        return Ok(());
    }
    std::thread::Builder::new()
        .name("dmsc-logging".into())
        .spawn(move || drain(rx))
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("dmsc-logging: {e}")))?;
    if let Ok(settings) = dmsc::config::log_settings_from_env() {
        if std::env::var_os("DMSC_DEBUG").is_some() {
            let lg = py.import("logging")?.call_method1("getLogger", ("dmsc",))?;
            let unset: u32 = lg.getattr("level")?.extract()?;
            if unset == 0 {
                let level = match settings.level.filter() {
                    log::LevelFilter::Trace | log::LevelFilter::Debug => 10,
                    log::LevelFilter::Info | log::LevelFilter::Off => 20,
                    _ => 30,
                };
                lg.call_method1("setLevel", (level,))?;
            }
        }
    }
    let at_exit = PyCFunction::new_closure(py, None, None, move |args, _| {
        // New lines go to standard error from now on; those already sent are delivered.
        STOPPED.store(true, Ordering::Release);
        if std::process::id() != pid {
            return; // a forked child: no thread to wait for
        }
        let (ack_tx, ack_rx) = sync_channel(1);
        if flush_tx.send(Msg::Flush(ack_tx)).is_ok() {
            // The delivering thread needs the GIL to finish.
            args.py()
                .detach(move || ack_rx.recv_timeout(Duration::from_secs(2)).ok());
        }
    })?;
    py.import("atexit")?.call_method1("register", (at_exit,))?;
    Ok(())
}
