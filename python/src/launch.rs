//! The local launcher of `dmscrun`, for `python -m dmsc.run`.

use crate::errors::to_py;
use pyo3::prelude::*;
use std::ffi::OsString;

/// Start `n` ranks of `program args...` on this machine, exactly as `dmscrun -n N` does
/// (torchrun's environment, `[rank] ` output prefixes, SIGTERM then SIGKILL to the others when
/// one fails, SIGINT/SIGTERM forwarded) and wait for them. `env` adds variables to every
/// rank's environment. Returns the job's exit code (the first failing rank's, 128 + signal
/// for a signal). Raises `dmsc.SystemCallError` (`errno` ENOENT or EACCES) when `program`
/// cannot be started. The GIL is released while the ranks run.
#[pyfunction]
#[pyo3(signature = (n, program, args, env=None))]
pub fn launch(
    py: Python<'_>,
    n: usize,
    program: OsString,
    args: Vec<OsString>,
    env: Option<Vec<(String, String)>>,
) -> PyResult<i32> {
    let env = env.unwrap_or_default();
    py.detach(|| crate::errors::no_panic(|| dmsc::launch::launch(n, &program, &args, &env)))
        .map_err(to_py)
}
