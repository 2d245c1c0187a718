//! The business layer's HTTP gateway (axum) and the job runner behind it.
//!
//! Routes (all but `/health` need `Authorization: Bearer <token>`; without it the answer is
//! 401 and nothing is queued):
//!
//! | route | what |
//! | --- | --- |
//! | `POST /jobs` | submit a training job ([`JobSpec`] as JSON); 202 with its id |
//! | `GET /jobs` | every job and its status |
//! | `GET /jobs/:id` | one job: status, progress, the steps it resumed from, its result |
//! | `GET /jobs/:id/progress` | server-sent events of its progress until it ends |
//! | `POST /registry/heartbeat` | a service instance's heartbeat |
//! | `GET /registry` | live instances |
//! | `GET /health` | liveness |
//!
//! The control layer runs in the job runner thread: a durable [`Scheduler`] with one
//! scheduler worker per local worker slot admits a job as a gang of `stages × replicas`
//! slots; the model is segmented by DP; the ranks are started with [`dmsc::launch`], which
//! starts every rank again (up to `restarts` times) when one dies, and the job resumes from
//! its last checkpoint.
//!
//! The service registry behind `/registry` is the backend [`GatewayConfig::registry`]
//! names: in this process by default, or etcd (feature `etcd`). Its calls block, so the
//! handlers run them on tokio's blocking pool.

use crate::clock::{Clock, SystemClock};
use crate::durable::Durable;
use crate::error::{Error, Result};
use crate::mlp::{self, JobSpec};
use crate::registry::{Backend, Heartbeat, ServiceRegistry};
use crate::scheduler::{Config, Scheduler};
use crate::segment::{Dp, Problem, Strategy};
use crate::store::Store;
use crate::task::{Assignment, TaskSpec};
use crate::worker;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How to run the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// `host:port` to listen on (port 0: any).
    pub bind: String,
    /// The bearer token clients must present.
    pub token: String,
    /// The SQLite store.
    pub db: PathBuf,
    /// Local worker slots.
    pub slots: usize,
    /// The `dmsc-serve` executable workers run.
    pub exe: PathBuf,
    /// Times a job's ranks are all started again after one dies.
    pub restarts: usize,
    /// The service registry backend.
    pub registry: Backend,
}

/// How long an instance stays registered after its last heartbeat.
pub const REGISTRY_TTL_MS: u64 = 3000;

struct App {
    cfg: GatewayConfig,
    url: String,
    durable: Mutex<Durable>,
    registry: Arc<Mutex<Box<dyn ServiceRegistry>>>,
    clock: Arc<SystemClock>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = v.strip_prefix("Bearer ") else {
        return false;
    };
    // Compare in time independent of where they differ.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "missing or wrong bearer token"})),
    )
        .into_response()
}

fn bad(e: Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": e.to_string()})),
    )
        .into_response()
}

fn internal(e: Error) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": e.to_string()})),
    )
        .into_response()
}

impl App {
    fn job_view(&self, id: u64) -> Option<Value> {
        let d = lock(&self.durable);
        let status = d.sched.status(id)?;
        let meta = |k: String| {
            d.store
                .meta(&k)
                .ok()
                .flatten()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        };
        Some(json!({
            "id": id,
            "status": status,
            "progress": meta(worker::progress_key(id)),
            "resumed_from": meta(worker::resumed_key(id)),
        }))
    }
}

async fn submit(State(app): State<Arc<App>>, headers: HeaderMap, body: String) -> Response {
    if !authorized(&headers, &app.cfg.token) {
        tracing::warn!("refused a job submission without a valid token");
        return unauthorized();
    }
    let spec: JobSpec = match serde_json::from_str(&body) {
        Ok(s) => s,
        Err(source) => {
            return bad(Error::Json {
                what: "job".into(),
                source,
            })
        }
    };
    if let Err(e) = spec.validate() {
        return bad(e);
    }
    if spec.workers() > app.cfg.slots {
        return bad(Error::invalid(
            "replicas",
            format!(
                "the job needs {} workers, this gateway has {} slots",
                spec.workers(),
                app.cfg.slots
            ),
        ));
    }
    let task = TaskSpec {
        gang: spec.workers() as u32,
        retries: 1,
        payload: serde_json::to_value(&spec).expect("a job serializes"),
        ..TaskSpec::new("train")
    };
    match lock(&app.durable).submit(task) {
        Ok(id) => {
            tracing::info!(
                job = id,
                workers = spec.workers(),
                steps = spec.steps,
                "job accepted"
            );
            (StatusCode::ACCEPTED, Json(json!({"id": id}))).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &app.cfg.token) {
        return unauthorized();
    }
    let ids = lock(&app.durable).sched.task_ids();
    let jobs: Vec<Value> = ids.into_iter().filter_map(|i| app.job_view(i)).collect();
    Json(json!({ "jobs": jobs })).into_response()
}

async fn status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<u64>,
) -> Response {
    if !authorized(&headers, &app.cfg.token) {
        return unauthorized();
    }
    match app.job_view(id) {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no job {id}")})),
        )
            .into_response(),
    }
}

async fn progress(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<u64>,
) -> Response {
    if !authorized(&headers, &app.cfg.token) {
        return unauthorized();
    }
    if app.job_view(id).is_none() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no job {id}")})),
        )
            .into_response();
    }
    let stream = futures_util::stream::unfold(
        (app, false, Value::Null),
        move |(app, ended, last)| async move {
            if ended {
                return None;
            }
            loop {
                let view = app.job_view(id).unwrap_or(Value::Null);
                let finished = matches!(
                    view["status"]["state"].as_str(),
                    Some("done") | Some("failed")
                );
                if view != last || finished {
                    let ev = SseEvent::default().event("progress").data(view.to_string());
                    return Some((Ok::<_, Infallible>(ev), (app, finished, view)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(beat): Json<Heartbeat>,
) -> Response {
    if !authorized(&headers, &app.cfg.token) {
        return unauthorized();
    }
    let now = app.clock.now_ms();
    match on_registry(&app, move |r| r.heartbeat(beat, now)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ Error::Invalid { .. }) => bad(e),
        Err(e) => {
            tracing::warn!(error = %e, "registry heartbeat failed");
            internal(e)
        }
    }
}

/// Run `f` on the registry on the blocking pool (the etcd backend's calls block).
async fn on_registry<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&mut dyn ServiceRegistry) -> Result<T> + Send + 'static,
) -> Result<T> {
    let registry = app.registry.clone();
    tokio::task::spawn_blocking(move || f(lock(&registry).as_mut()))
        .await
        .map_err(|e| Error::Registry {
            what: "a registry call".into(),
            reason: e.to_string(),
        })?
}

async fn registry(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &app.cfg.token) {
        return unauthorized();
    }
    let now = app.clock.now_ms();
    match on_registry(&app, move |r| r.discover(None, now)).await {
        Ok(instances) => Json(json!({ "instances": instances })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "registry discovery failed");
            internal(e)
        }
    }
}

/// Run one job: plan, launch the ranks, report.
fn run_job(app: &App, a: &Assignment) -> Result<Value> {
    let spec: JobSpec =
        serde_json::from_value(a.payload.clone()).map_err(|source| Error::Json {
            what: "job".into(),
            source,
        })?;
    let model = spec.model_desc();
    let cluster = crate::cluster::ClusterDesc::homogeneous(spec.stages, 1e10, 1 << 34, 1e10);
    let mut problem = Problem::new(&model, &cluster);
    problem.stages = spec.stages;
    problem.micro_batches = spec.micro_batches;
    let plan = Dp.plan(&problem)?;
    tracing::info!(job = a.task, cuts = ?plan.cuts, bottleneck_s = plan.bottleneck_s, reason = %plan.reason, slots = ?a.workers, "job planned");
    let args: Vec<std::ffi::OsString> = vec![
        "worker".into(),
        "--job".into(),
        a.task.to_string().into(),
        "--db".into(),
        app.cfg.db.clone().into_os_string(),
        "--gateway".into(),
        app.url.clone().into(),
        "--token".into(),
        app.cfg.token.clone().into(),
        "--spec".into(),
        serde_json::to_string(&spec)
            .expect("a job serializes")
            .into(),
        "--cuts".into(),
        plan.cuts
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
            .into(),
    ];
    let opts = dmsc::launch::LaunchOptions {
        restarts: app.cfg.restarts,
        ..Default::default()
    };
    let env = vec![("DMSC_TIMEOUT".to_string(), "20".to_string())];
    let code =
        dmsc::launch::launch_with(spec.workers(), app.cfg.exe.as_os_str(), &args, &env, &opts)?;
    if code != 0 {
        return Err(Error::invalid(
            "job",
            format!(
                "the ranks exited with code {code} after {} restarts",
                app.cfg.restarts
            ),
        ));
    }
    let d = lock(&app.durable);
    let progress = d.store.meta(&worker::progress_key(a.task))?;
    let resumed = d.store.meta(&worker::resumed_key(a.task))?;
    let mut checksum = 0f64;
    for s in 0..spec.stages {
        let (step, bytes) = d
            .store
            .latest_checkpoint(&worker::checkpoint_key(a.task, s))?
            .ok_or_else(|| Error::invalid("checkpoint", format!("stage {s} saved no weights")))?;
        if step != spec.steps {
            return Err(Error::invalid(
                "checkpoint",
                format!("stage {s} stopped at step {step} of {}", spec.steps),
            ));
        }
        checksum += mlp::from_bytes(&bytes)?
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>();
    }
    Ok(json!({
        "steps": spec.steps,
        "cuts": plan.cuts,
        "progress": progress.and_then(|p| serde_json::from_str::<Value>(&p).ok()),
        "resumed_from": resumed.and_then(|p| serde_json::from_str::<Value>(&p).ok()),
        "weights_sum": checksum,
    }))
}

fn runner(app: Arc<App>) {
    loop {
        let assignments = {
            let mut d = lock(&app.durable);
            for w in 0..app.cfg.slots as u64 {
                let _ = d.sched.heartbeat(w);
            }
            d.dispatch().unwrap_or_else(|e| {
                tracing::error!(error = %e, "dispatch failed");
                vec![]
            })
        };
        for a in assignments {
            let app = app.clone();
            std::thread::spawn(move || {
                let outcome = run_job(&app, &a);
                let mut d = lock(&app.durable);
                let r = match outcome {
                    Ok(v) => d.complete(a.id, v),
                    Err(e) => {
                        tracing::warn!(job = a.task, error = %e, "job failed");
                        d.fail(a.id, &e.to_string())
                    }
                };
                if let Err(e) = r {
                    tracing::error!(job = a.task, error = %e, "recording the job's outcome failed");
                }
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Serve until the process ends. Prints `LISTENING <addr>` on stdout once bound.
pub async fn serve(cfg: GatewayConfig) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.bind)
        .await
        .map_err(|e| Error::io(format!("listening on {}", cfg.bind), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    let backend = cfg.registry.clone();
    let instances = tokio::task::spawn_blocking(move || backend.open(REGISTRY_TTL_MS))
        .await
        .map_err(|e| Error::Registry {
            what: "opening the registry".into(),
            reason: e.to_string(),
        })??;
    let store = Store::open(&cfg.db)?;
    let clock = SystemClock::new();
    let sched_cfg = Config {
        heartbeat_timeout_ms: 60_000,
        backoff_base_ms: 500,
        ..Config::default()
    };
    let (mut durable, replayed) = Durable::open(Scheduler::new(sched_cfg, clock.clone()), store)?;
    for w in 0..cfg.slots as u64 {
        durable.sched.add_worker(w, 1.0);
    }
    tracing::info!(%addr, slots = cfg.slots, registry = ?cfg.registry, requeued = replayed.requeued, done = replayed.done, "gateway up");
    let app = Arc::new(App {
        url: format!("http://{addr}"),
        cfg,
        durable: Mutex::new(durable),
        registry: Arc::new(Mutex::new(instances)),
        clock,
    });
    let r = app.clone();
    std::thread::Builder::new()
        .name("job-runner".into())
        .spawn(move || runner(r))
        .map_err(|e| Error::io("starting the job runner", e))?;
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/jobs", post(submit).get(list))
        .route("/jobs/:id", get(status))
        .route("/jobs/:id/progress", get(progress))
        .route("/registry", get(registry))
        .route("/registry/heartbeat", post(heartbeat))
        .with_state(app);
    println!("LISTENING {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    axum::serve(listener, router)
        .await
        .map_err(|e| Error::io("serving HTTP", e))
}
