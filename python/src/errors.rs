//! Python exceptions for `dmsc::Error`: one class per variant, all derived from
//! `dmsc.DmscError`, each carrying the core's message and the variant's structured fields as
//! attributes.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyList;

pyo3::create_exception!(
    dmsc,
    DmscError,
    PyException,
    "Base class of every dmsc error. `kind` names the variant (`\"Timeout\"`, ...)."
);
pyo3::create_exception!(
    dmsc,
    InvalidArgument,
    DmscError,
    "A bad argument; the message names it and says why."
);
pyo3::create_exception!(
    dmsc,
    InvalidUsage,
    DmscError,
    "The call is not valid in the communicator's state (for example after `destroy()`)."
);
pyo3::create_exception!(
    dmsc,
    Timeout,
    DmscError,
    "A deadline passed. `missing` lists the ranks that did not arrive, `waited_s` the seconds waited."
);
pyo3::create_exception!(
    dmsc,
    Mismatch,
    DmscError,
    "Ranks called different collectives. `seq` is the operation number, `ranks` the ranks involved."
);
pyo3::create_exception!(
    dmsc,
    PeerLost,
    DmscError,
    "A peer went away (connection closed or reset). `peer` is its rank."
);
pyo3::create_exception!(
    dmsc,
    RemoteError,
    DmscError,
    "Another rank reported an error. `rank` is the reporting rank."
);
pyo3::create_exception!(dmsc, Aborted, DmscError, "The communicator was aborted.");
pyo3::create_exception!(
    dmsc,
    SystemCallError,
    DmscError,
    "A system call failed. `errno` is the OS error number (or None)."
);
pyo3::create_exception!(
    dmsc,
    ProtocolError,
    DmscError,
    "Malformed bytes on the wire or in the store protocol."
);
pyo3::create_exception!(
    dmsc,
    InternalError,
    DmscError,
    "A bug in dmsc: an invariant did not hold."
);

/// Register the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("DmscError", py.get_type::<DmscError>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("InvalidUsage", py.get_type::<InvalidUsage>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("Mismatch", py.get_type::<Mismatch>())?;
    m.add("PeerLost", py.get_type::<PeerLost>())?;
    m.add("RemoteError", py.get_type::<RemoteError>())?;
    m.add("Aborted", py.get_type::<Aborted>())?;
    m.add("SystemCallError", py.get_type::<SystemCallError>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}

/// An `InvalidArgument` exception with the core's wording (`invalid argument: ...`).
pub fn invalid(what: impl Into<String>) -> PyErr {
    to_py(dmsc::Error::invalid(what))
}

/// An `InvalidUsage` exception with the core's wording.
pub fn usage(what: impl Into<String>) -> PyErr {
    to_py(dmsc::Error::usage(what))
}

/// Convert a core error into the matching Python exception, fields attached as attributes.
pub fn to_py(e: dmsc::Error) -> PyErr {
    let msg = e.to_string();
    let err = match &e {
        dmsc::Error::InvalidArgument { .. } => InvalidArgument::new_err(msg),
        dmsc::Error::InvalidUsage { .. } => InvalidUsage::new_err(msg),
        dmsc::Error::Timeout { .. } => Timeout::new_err(msg),
        dmsc::Error::Mismatch { .. } => Mismatch::new_err(msg),
        dmsc::Error::PeerLost { .. } => PeerLost::new_err(msg),
        dmsc::Error::Remote { .. } => RemoteError::new_err(msg),
        dmsc::Error::Aborted { .. } => Aborted::new_err(msg),
        dmsc::Error::System { .. } => SystemCallError::new_err(msg),
        dmsc::Error::Protocol { .. } => ProtocolError::new_err(msg),
        _ => InternalError::new_err(msg),
    };
    Python::attach(|py| {
        // Attribute failures (out of memory) leave a plain exception: never worse than that.
        let _ = attach_fields(py, &err, &e);
    });
    err
}

fn attach_fields(py: Python<'_>, err: &PyErr, e: &dmsc::Error) -> PyResult<()> {
    let v = err.value(py);
    v.setattr("kind", e.kind_name())?;
    match e {
        dmsc::Error::Timeout {
            waited_s, missing, ..
        } => {
            v.setattr("waited_s", *waited_s)?;
            v.setattr("missing", PyList::new(py, missing)?)?;
        }
        dmsc::Error::Mismatch { seq, ranks, .. } => {
            v.setattr("seq", *seq)?;
            v.setattr("ranks", PyList::new(py, ranks)?)?;
        }
        dmsc::Error::PeerLost { peer, .. } => v.setattr("peer", *peer)?,
        dmsc::Error::Remote { from, .. } => v.setattr("rank", *from)?,
        dmsc::Error::System { errno, .. } => v.setattr("errno", *errno)?,
        _ => {}
    }
    Ok(())
}

/// Run `f`, turning a panic into `InternalError` so that none reaches Python as a
/// `PanicException`.
pub fn no_panic<T>(f: impl FnOnce() -> dmsc::Result<T>) -> dmsc::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(dmsc::Error::internal(format!("panic in dmsc: {what}")))
        }
    }
}
