//! `dmsc._dmsc`: the native module of the Python package `dmsc`.
//!
//! * [`comm`]: `Communicator` and its methods; [`layout`]: argument checks and buffer
//!   layouts; [`call`]: running one operation.
//! * [`buffer`], [`dlpack`]: zero-copy access to buffer-protocol objects and DLPack tensors.
//! * [`work`]: `Work`, the handle of `async_op=True` calls.
//! * [`ops`]: `ReduceOp`; [`errors`]: the exception classes; [`launch`]: `python -m dmsc.run`.
//! * [`log_bridge`]: dmsc's log lines into Python's `logging`.

mod buffer;
mod call;
mod comm;
mod cuda_array;
mod dlpack;
mod errors;
mod launch;
mod layout;
mod log_bridge;
mod ops;
mod work;

use errors::{no_panic, to_py};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Join the job described by the environment: dmscrun / `python -m dmsc.run` and torchrun
/// (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), Open MPI (`OMPI_COMM_WORLD_*`) or
/// Slurm (`SLURM_PROCID`, `SLURM_NTASKS`) with `DMSC_STORE_ADDR` or `MASTER_ADDR`/`MASTER_PORT`.
/// Settings come from the `DMSC_*` variables; `timeout` (seconds) overrides `DMSC_TIMEOUT`.
/// Blocks until every rank has joined.
#[pyfunction]
#[pyo3(signature = (*, timeout=None))]
fn init(py: Python<'_>, timeout: Option<f64>) -> PyResult<comm::Communicator> {
    let config = comm::config(timeout)?;
    let c = py.detach(|| no_panic(|| dmsc::Communicator::from_env_with_config(config)));
    Ok(comm::Communicator::wrap(c.map_err(to_py)?))
}

/// Make a unique id (like `ncclGetUniqueId`): 128 bytes naming a rendezvous store that this
/// process starts (on the interface DMSC_SOCKET_IFNAME selects). Pass the bytes to every
/// rank, then call `Communicator(rank, size, unique_id=id)` on each, this process included.
#[pyfunction]
fn new_unique_id(py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
    let id = py.detach(|| no_panic(dmsc::new_unique_id)).map_err(to_py)?;
    Ok(PyBytes::new(py, &id.to_bytes()))
}

#[pymodule]
fn _dmsc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<comm::Communicator>()?;
    m.add_class::<work::Work>()?;
    m.add_class::<ops::ReduceOp>()?;
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(new_unique_id, m)?)?;
    m.add_function(wrap_pyfunction!(launch::launch, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    log_bridge::install(m.py())?;
    Ok(())
}
