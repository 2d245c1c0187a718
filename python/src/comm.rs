//! `dmsc.Communicator`: joining a job and the collective / point-to-point methods.
//!
//! Conventions (documented in the stubs): every collective works in place on its first
//! argument unless `out=` is given; in-place layouts are NCCL's (all_gather: this rank's block
//! already sits at block `rank`; reduce_scatter: the result lands in block `rank`).

use crate::call::Call;
use crate::errors::{invalid, no_panic, to_py, usage};
use crate::layout;
use crate::ops;
use dmsc::call::Shape;
use dmsc::{CollKind, ReduceOp};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyDict;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A group of ranks that run collectives together (like a torch.distributed process group
/// or an NCCL communicator). Every rank must call the same collectives in the same order.
///
/// Create one with `dmsc.init()` (from the launcher's environment), or explicitly with
/// `Communicator(rank, size, store_addr="host:port")` or
/// `Communicator(rank, size, unique_id=id)` where `id = dmsc.new_unique_id()` was made on one
/// process and passed to all. Buffers are numpy arrays, bytearray, memoryview or any other
/// buffer-protocol object, or DLPack tensors (torch CPU tensors); they are used in place,
/// never copied.
#[pyclass(frozen, module = "dmsc")]
pub struct Communicator {
    inner: RwLock<Option<Arc<dmsc::Communicator>>>,
    abort: Arc<dmsc::AbortHandle>,
    rank: usize,
    size: usize,
}

impl Drop for Communicator {
    /// A communicator collected without `destroy()` still finishes the operations in flight
    /// on it; do that without holding the GIL, so other Python threads keep running.
    fn drop(&mut self) {
        let c = self
            .inner
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = c {
            Python::attach(move |py| py.detach(move || drop(c)));
        }
    }
}

impl Communicator {
    /// Wrap a joined communicator.
    pub fn wrap(c: dmsc::Communicator) -> Communicator {
        Communicator {
            abort: c.abort_handle(),
            rank: c.rank(),
            size: c.size(),
            inner: RwLock::new(Some(Arc::new(c))),
        }
    }

    fn comm(&self) -> PyResult<Arc<dmsc::Communicator>> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.clone()
            .ok_or_else(|| usage("the communicator was destroyed (destroy() was called)"))
    }

    fn run(&self, py: Python<'_>, call: Call, async_op: bool) -> PyResult<Py<PyAny>> {
        let comm = self.comm()?;
        call.run(py, &comm, async_op)
    }

    /// What the argument checks need to know.
    fn shape(&self) -> Shape {
        Shape {
            rank: self.rank,
            size: self.size,
        }
    }
}

/// Settings from the `DMSC_*` variables, with `timeout` (seconds) overriding `DMSC_TIMEOUT`.
pub fn config(timeout: Option<f64>) -> PyResult<dmsc::Config> {
    let mut config = dmsc::Config::from_env().map_err(to_py)?;
    match timeout {
        None => {}
        Some(t) if t.is_finite() && t > 0.0 => {
            config.engine.timeout = Duration::from_secs_f64(t.min(1e9));
        }
        Some(t) => {
            return Err(invalid(format!(
                "timeout must be a positive number of seconds, got {t}"
            )))
        }
    }
    Ok(config)
}

/// The dict of `Communicator.path_metrics()` for path `m` to `peer`.
fn path_dict<'py>(
    py: Python<'py>,
    peer: usize,
    m: &dmsc::PathMetrics,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("peer", peer)?;
    d.set_item("path", m.path)?;
    d.set_item("state", m.state.name())?;
    d.set_item("epoch", m.epoch)?;
    d.set_item("rate_bytes_per_s", m.rate_bps)?;
    d.set_item("srtt_s", m.srtt.as_secs_f64())?;
    d.set_item("inflight", m.inflight)?;
    d.set_item("bytes_sent", m.bytes_sent)?;
    d.set_item("bytes_acked", m.bytes_acked)?;
    d.set_item("bytes_requeued", m.bytes_requeued)?;
    d.set_item("bytes_duplicated", m.bytes_duplicated)?;
    d.set_item("failures", m.failures)?;
    d.set_item("last_failure", m.last_failure.as_str())?;
    let changes: Vec<(f64, &str)> = m
        .changes
        .iter()
        .map(|(t, s)| (t.as_secs_f64(), s.name()))
        .collect();
    d.set_item("changes", changes)?;
    Ok(d)
}

#[pymethods]
impl Communicator {
    /// Join a job explicitly: as rank `rank` of `size`, through the rendezvous store at
    /// `store_addr` ("host:port"; rank 0 serves it unless `serve_store=False`), or through
    /// `unique_id` (bytes from `dmsc.new_unique_id()`). `timeout` (seconds) overrides
    /// DMSC_TIMEOUT. Blocks until every rank has joined.
    #[new]
    #[pyo3(signature = (rank, size, store_addr=None, unique_id=None, *, timeout=None, serve_store=true))]
    fn new(
        py: Python<'_>,
        rank: i64,
        size: i64,
        store_addr: Option<String>,
        unique_id: Option<PyBackedBytes>,
        timeout: Option<f64>,
        serve_store: bool,
    ) -> PyResult<Communicator> {
        let rank = layout::index("rank", rank)?;
        let nranks = layout::index("size", size)?;
        let config = config(timeout)?;
        let c = match (store_addr, unique_id) {
            (Some(addr), None) => {
                let opts = dmsc::InitOptions {
                    rank,
                    nranks,
                    store_addr: addr,
                    serve_store,
                    config,
                };
                py.detach(|| no_panic(|| dmsc::Communicator::init(opts)))
            }
            (None, Some(id)) => {
                let id = dmsc::UniqueId::from_bytes(&id).map_err(to_py)?;
                py.detach(|| {
                    no_panic(|| dmsc::Communicator::init_with_id(&id, rank, nranks, config))
                })
            }
            _ => {
                return Err(invalid(
                    "give exactly one of store_addr and unique_id (or use dmsc.init() under a \
                     launcher)",
                ))
            }
        };
        Ok(Communicator::wrap(c.map_err(to_py)?))
    }

    /// This process's rank, `0 <= rank < size`.
    #[getter]
    fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// Name of the transport in use: `shm` (shared memory), `tcp-uring` or `tcp-socket`,
    /// with `+cma` when large chunks pass by cross-memory attach.
    #[getter]
    fn transport(&self) -> PyResult<&'static str> {
        Ok(self.comm()?.transport_name())
    }

    /// The transport serving each rank, indexed by rank (`"self"` for this one).
    #[getter]
    fn peer_transports(&self) -> PyResult<Vec<&'static str>> {
        Ok(self.comm()?.peer_transports().to_vec())
    }

    /// The communicator's topology: `{"hosts": [{"name": str, "ranks": [int]}], "host_of":
    /// [int per rank], "links": [[None or {"latency_us": float, "gbps": float}]]}`, where
    /// `links[a][b]` is the link from host `a` to host `b` (`a == b`: within host `a`), as
    /// measured at init when the ranks span hosts (`None`: not measured).
    fn topology<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let comm = self.comm()?;
        let t = comm.topology();
        let hosts = (0..t.nhosts())
            .map(|h| {
                let d = PyDict::new(py);
                d.set_item("name", t.host_name(h))?;
                d.set_item("ranks", t.ranks_of(h).to_vec())?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()?;
        let mut links = Vec::with_capacity(t.nhosts());
        for a in 0..t.nhosts() {
            let mut row = Vec::with_capacity(t.nhosts());
            for b in 0..t.nhosts() {
                row.push(match t.link(a, b).map_err(to_py)? {
                    None => None,
                    Some(l) => {
                        let d = PyDict::new(py);
                        d.set_item("latency_us", l.latency_s * 1e6)?;
                        d.set_item("gbps", l.bytes_per_s / 1e9)?;
                        Some(d)
                    }
                });
            }
            links.push(row);
        }
        let d = PyDict::new(py);
        d.set_item("hosts", hosts)?;
        d.set_item(
            "host_of",
            (0..t.nranks()).map(|r| t.host_of(r)).collect::<Vec<_>>(),
        )?;
        d.set_item("links", links)?;
        Ok(d)
    }

    /// Metrics of the network paths of packet spraying (`DMSC_PATHS` > 1): one dict per peer
    /// and path, ordered by peer, then path. Empty with one path per peer (the default). A
    /// snapshot the progress thread refreshes every few milliseconds; never waits for an
    /// operation.
    fn path_metrics<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let comm = self.comm()?;
        let mut peers = no_panic(|| Ok(comm.path_metrics())).map_err(to_py)?;
        peers.sort_by_key(|p| p.peer);
        let mut out = Vec::new();
        for p in &mut peers {
            p.paths.sort_by_key(|m| m.path);
            for m in &p.paths {
                out.push(path_dict(py, p.peer, m)?);
            }
        }
        Ok(out)
    }

    /// Reduce `tensor` across ranks with `op`; the result replaces `tensor`, or goes to `out`
    /// (same type and length).
    #[pyo3(signature = (tensor, op=None, *, out=None, async_op=false, factor=None))]
    fn all_reduce(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
        out: Option<&Bound<'_, PyAny>>,
        async_op: bool,
        factor: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let op = ops::parse(op)?;
        let call = layout::collective(
            self.shape(),
            CollKind::AllReduce,
            tensor,
            out,
            (op, factor, 0),
            true,
        )?;
        self.run(py, call, async_op)
    }

    /// Reduce `tensor` (`size` equal blocks) across ranks with `op` and keep block `rank`: in
    /// place it lands in block `rank` of `tensor`; with `out` (one block long) it goes there.
    #[pyo3(signature = (tensor, op=None, *, out=None, async_op=false, factor=None))]
    fn reduce_scatter(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
        out: Option<&Bound<'_, PyAny>>,
        async_op: bool,
        factor: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let op = ops::parse(op)?;
        let call = layout::collective(
            self.shape(),
            CollKind::ReduceScatter,
            tensor,
            out,
            (op, factor, 0),
            true,
        )?;
        self.run(py, call, async_op)
    }

    /// Gather every rank's block: with `out` (`size` times as long as `tensor`), block `r` of
    /// `out` receives rank `r`'s `tensor`; in place, `tensor` holds `size` blocks and this
    /// rank's contribution already sits at block `rank`.
    #[pyo3(signature = (tensor, *, out=None, async_op=false))]
    fn all_gather(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        out: Option<&Bound<'_, PyAny>>,
        async_op: bool,
    ) -> PyResult<Py<PyAny>> {
        let call = layout::collective(
            self.shape(),
            CollKind::AllGather,
            tensor,
            out,
            (ReduceOp::Sum, None, 0),
            true,
        )?;
        self.run(py, call, async_op)
    }

    /// Broadcast `root`'s `tensor` to every rank, in place; with `out`, root's `tensor` lands
    /// in every rank's `out` (including the root's), and `tensor` is only read on the root.
    #[pyo3(signature = (tensor, root=0, *, out=None, async_op=false))]
    fn broadcast(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        root: i64,
        out: Option<&Bound<'_, PyAny>>,
        async_op: bool,
    ) -> PyResult<Py<PyAny>> {
        let root = layout::rank(self.shape(), "root", root)?;
        let writable = self.rank != root;
        let call = layout::collective(
            self.shape(),
            CollKind::Broadcast,
            tensor,
            out,
            (ReduceOp::Sum, None, root),
            writable,
        )?;
        self.run(py, call, async_op)
    }

    /// Reduce every rank's `tensor` with `op` onto `root`: in place the result replaces
    /// `root`'s `tensor` (other ranks' tensors may be used as scratch space); with `out`, it
    /// goes to `root`'s `out` and every `tensor` is left unchanged (`out` is not written on
    /// other ranks).
    #[pyo3(signature = (tensor, root=0, op=None, *, out=None, async_op=false, factor=None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn reduce(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        root: i64,
        op: Option<&Bound<'_, PyAny>>,
        out: Option<&Bound<'_, PyAny>>,
        async_op: bool,
        factor: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let root = layout::rank(self.shape(), "root", root)?;
        let op = ops::parse(op)?;
        let call = layout::collective(
            self.shape(),
            CollKind::Reduce,
            tensor,
            out,
            (op, factor, root),
            true,
        )?;
        self.run(py, call, async_op)
    }

    /// Exchange equal blocks: block `j` of `tensor` goes to rank `j`, and block `i` of the
    /// result (`tensor` in place, or `out`) comes from rank `i`.
    #[pyo3(signature = (tensor, *, out=None, async_op=false))]
    fn all_to_all(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        out: Option<&Bound<'_, PyAny>>,
        async_op: bool,
    ) -> PyResult<Py<PyAny>> {
        let call = layout::collective(
            self.shape(),
            CollKind::AllToAll,
            tensor,
            out,
            (ReduceOp::Sum, None, 0),
            true,
        )?;
        self.run(py, call, async_op)
    }

    /// All-to-all with per-rank sizes, like torch's `all_to_all_single(output, input,
    /// output_split_sizes, input_split_sizes)`: sizes count rows of the first dimension
    /// (elements for 1-D buffers); `input_split_sizes[j]` rows go to rank `j` and
    /// `output_split_sizes[i]` rows come from rank `i`, packed in rank order. A missing list
    /// splits evenly. `output` may be `input` itself (in place).
    #[pyo3(signature = (output, input, output_split_sizes=None, input_split_sizes=None, *, async_op=false))]
    fn all_to_all_v(
        &self,
        py: Python<'_>,
        output: &Bound<'_, PyAny>,
        input: &Bound<'_, PyAny>,
        output_split_sizes: Option<Vec<i64>>,
        input_split_sizes: Option<Vec<i64>>,
        async_op: bool,
    ) -> PyResult<Py<PyAny>> {
        let call = layout::all_to_all_v(
            self.shape(),
            output,
            input,
            output_split_sizes,
            input_split_sizes,
        )?;
        self.run(py, call, async_op)
    }

    /// Block until every rank has entered the barrier.
    #[pyo3(signature = (*, async_op=false))]
    fn barrier(&self, py: Python<'_>, async_op: bool) -> PyResult<Py<PyAny>> {
        let call = Call::barrier();
        self.run(py, call, async_op)
    }

    /// Send `tensor` to rank `dst`. Matched in order with `dst`'s `recv` from this rank;
    /// `tag`, type and length must match.
    #[pyo3(signature = (tensor, dst, tag=0, *, async_op=false))]
    fn send(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        dst: i64,
        tag: u32,
        async_op: bool,
    ) -> PyResult<Py<PyAny>> {
        let call = layout::p2p(self.shape(), Some(("tensor", tensor, dst)), None, tag)?;
        self.run(py, call, async_op)
    }

    /// Receive into `tensor` from rank `src` (its matching `send`).
    #[pyo3(signature = (tensor, src, tag=0, *, async_op=false))]
    fn recv(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        src: i64,
        tag: u32,
        async_op: bool,
    ) -> PyResult<Py<PyAny>> {
        let call = layout::p2p(self.shape(), None, Some(("tensor", tensor, src)), tag)?;
        self.run(py, call, async_op)
    }

    /// Send `tensor` to `dst` and receive `out` from `src` at the same time (one group, like
    /// NCCL's grouped send/recv): the deadlock-free way to exchange with neighbours, since
    /// separate calls run one after the other. `tensor` and `out` must not overlap.
    #[pyo3(signature = (tensor, dst, out, src, tag=0, *, async_op=false))]
    #[allow(clippy::too_many_arguments)]
    fn send_recv(
        &self,
        py: Python<'_>,
        tensor: &Bound<'_, PyAny>,
        dst: i64,
        out: &Bound<'_, PyAny>,
        src: i64,
        tag: u32,
        async_op: bool,
    ) -> PyResult<Py<PyAny>> {
        let call = layout::p2p(
            self.shape(),
            Some(("tensor", tensor, dst)),
            Some(("out", out, src)),
            tag,
        )?;
        self.run(py, call, async_op)
    }

    /// Split into sub-communicators (like `MPI_Comm_split` / `ncclCommSplit`): ranks passing
    /// the same `color` form a new communicator, ordered by `key` then by rank. `color=None`
    /// (or negative) joins none and returns None. Every rank must call it, like a collective.
    #[pyo3(signature = (color, key=0))]
    fn split(
        &self,
        py: Python<'_>,
        color: Option<i64>,
        key: i64,
    ) -> PyResult<Option<Communicator>> {
        let color =
            match color {
                None => None,
                Some(c) if c < 0 => None,
                Some(c) => Some(u32::try_from(c).ok().filter(|&c| c < u32::MAX).ok_or_else(
                    || invalid(format!("color {c} is too large (at most 4294967294)")),
                )?),
            };
        let comm = self.comm()?;
        let r = py.detach(|| no_panic(|| comm.split(color, key)));
        Ok(r.map_err(to_py)?.map(Communicator::wrap))
    }

    /// Build a communicator of the ranks of this one minus `exclude` (like `ncclCommShrink`),
    /// typically after `dmsc.PeerLost` named a lost rank. Every surviving rank calls it with
    /// the same list; the excluded ranks do not. New ranks follow the survivors' order here.
    /// This communicator may be failed; it is left as it is.
    fn shrink(&self, py: Python<'_>, exclude: Vec<i64>) -> PyResult<Communicator> {
        let comm = self.comm()?;
        let n = comm.size();
        let exclude = exclude
            .into_iter()
            .map(|r| {
                usize::try_from(r).ok().filter(|&r| r < n).ok_or_else(|| {
                    invalid(format!("excluded rank {r} is out of range for {n} ranks"))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let r = py.detach(|| no_panic(|| comm.shrink(&exclude)));
        Ok(Communicator::wrap(r.map_err(to_py)?))
    }

    /// Abort: every operation in flight on this communicator fails promptly with
    /// `dmsc.Aborted`, and later ones fail at once. Safe from any thread (and signal
    /// handlers), any number of times.
    fn abort(&self) {
        self.abort.abort();
    }

    /// Release the communicator (its connections and threads) after finishing the operations
    /// already started. Later calls raise `dmsc.InvalidUsage`. Idempotent.
    fn destroy(&self, py: Python<'_>) {
        let c = self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
        py.detach(move || drop(c));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.destroy(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if self
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            ""
        } else {
            " destroyed"
        };
        format!(
            "<dmsc.Communicator rank={} size={}{state}>",
            self.rank, self.size
        )
    }
}
