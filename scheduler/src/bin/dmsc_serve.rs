//! `dmsc-serve`: the control layer's command line.
//!
//! ```text
//! dmsc-serve plan --model M.json --cluster C.json [--strategy dp|bisect|tabu|even|block|business]
//!                 [--stages K] [--micro-batches B] [--links L.json]
//! dmsc-serve profile resnet18|gpt2-small          print a shipped model profile
//! dmsc-serve probe --np N --out L.json            measure the link matrix over N local ranks
//! dmsc-serve probe-rank --out L.json              one rank of a probe (under dmscrun, torchrun…)
//! dmsc-serve sched-run --db D.sqlite --tasks N     a durable scheduler run (crash test)
//! dmsc-serve demo --token T [--bind H:P] [--db D] [--workers N] [--restarts R]
//!                 [--registry inprocess|etcd=http://H:P]
//!                                                 the four-layer demo (HTTP gateway)
//! dmsc-serve worker ...                           one rank of a demo job (internal)
//! ```
#![forbid(unsafe_code)]

use dmsc_scheduler::cluster::{ClusterDesc, LinkMatrix};
use dmsc_scheduler::model::ModelDesc;
use dmsc_scheduler::segment::{self, Problem};
use dmsc_scheduler::{probe, profiles, Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  dmsc-serve plan --model M.json --cluster C.json [--strategy dp|bisect|tabu|even|block|business]
                  [--stages K] [--micro-batches B] [--links L.json]
  dmsc-serve profile resnet18|gpt2-small
  dmsc-serve probe --np N --out L.json [--bytes B]
  dmsc-serve probe-rank --out L.json [--bytes B]
  dmsc-serve sched-run --db D.sqlite [--tasks N] [--work-ms MS]
  dmsc-serve demo --token T [--bind 127.0.0.1:8080] [--db dmsc-serve.sqlite] [--workers 4] [--restarts 3]
                  [--registry inprocess|etcd=http://127.0.0.1:2379]   (or DMSC_SERVE_REGISTRY)";

/// `--key value` pairs after the subcommand.
fn flags(args: &[String]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(key) = a.strip_prefix("--") else {
            return Err(Error::invalid(a.clone(), "expected a --flag"));
        };
        let v = it
            .next()
            .ok_or_else(|| Error::invalid(format!("--{key}"), "needs a value"))?;
        out.insert(key.to_string(), v.clone());
    }
    Ok(out)
}

fn required<'a>(f: &'a HashMap<String, String>, key: &str) -> Result<&'a String> {
    f.get(key)
        .ok_or_else(|| Error::invalid(format!("--{key}"), "is required"))
}

fn number(f: &HashMap<String, String>, key: &str, default: usize) -> Result<usize> {
    match f.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| Error::invalid(format!("--{key}"), format!("`{v}` is not a number"))),
    }
}

fn plan(args: &[String]) -> Result<()> {
    let f = flags(args)?;
    let model = ModelDesc::load(&PathBuf::from(required(&f, "model")?))?;
    let mut cluster = ClusterDesc::load(&PathBuf::from(required(&f, "cluster")?))?;
    if let Some(l) = f.get("links") {
        let text =
            std::fs::read_to_string(l).map_err(|e| Error::io(format!("reading links {l}"), e))?;
        let links: LinkMatrix = serde_json::from_str(&text).map_err(|source| Error::Json {
            what: format!("link matrix {l}"),
            source,
        })?;
        links.validate(cluster.ranks.len(), "links")?;
        cluster.links = Some(links);
    }
    let strategy = segment::by_name(f.get("strategy").map(String::as_str).unwrap_or("dp"))?;
    let mut p = Problem::new(&model, &cluster);
    p.stages = number(&f, "stages", p.stages)?;
    p.micro_batches = number(&f, "micro-batches", p.micro_batches)?;
    let plan = strategy.plan(&p)?;
    tracing::info!(strategy = strategy.name(), bottleneck_s = plan.bottleneck_s, reason = %plan.reason, "plan");
    println!(
        "{}",
        serde_json::to_string_pretty(&plan).expect("a plan serializes")
    );
    Ok(())
}

fn probe_options(f: &HashMap<String, String>) -> Result<probe::ProbeOptions> {
    let mut o = probe::ProbeOptions::default();
    o.large_bytes = number(f, "bytes", o.large_bytes)?;
    Ok(o)
}

fn probe_rank(args: &[String]) -> Result<()> {
    let f = flags(args)?;
    let out = required(&f, "out")?;
    let comm = dmsc::Communicator::from_env()?;
    let m = probe::measure(&comm, probe_options(&f)?)?;
    if comm.rank() == 0 {
        let text = serde_json::to_string_pretty(&m).expect("a matrix serializes");
        std::fs::write(out, text + "\n").map_err(|e| Error::io(format!("writing {out}"), e))?;
    }
    Ok(())
}

fn probe_local(args: &[String]) -> Result<()> {
    let f = flags(args)?;
    let n = number(&f, "np", 2)?;
    let out = required(&f, "out")?;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding dmsc-serve", e))?;
    let mut rank_args: Vec<std::ffi::OsString> =
        vec!["probe-rank".into(), "--out".into(), out.into()];
    if let Some(b) = f.get("bytes") {
        rank_args.extend(["--bytes".into(), b.into()]);
    }
    let code = dmsc::launch::launch(n, exe.as_os_str(), &rank_args, &[])?;
    if code != 0 {
        return Err(Error::invalid(
            "probe",
            format!("a rank failed (exit code {code})"),
        ));
    }
    Ok(())
}

/// Run `--tasks N` squaring tasks through a durable scheduler with 4 in-process workers,
/// replaying `--db` first (the crash test kills it and starts it again).
fn sched_run(args: &[String]) -> Result<()> {
    use dmsc_scheduler::clock::SystemClock;
    use dmsc_scheduler::durable::Durable;
    use dmsc_scheduler::scheduler::{Config, Scheduler};
    use dmsc_scheduler::store::Store;
    use dmsc_scheduler::task::TaskSpec;
    let f = flags(args)?;
    let db = PathBuf::from(required(&f, "db")?);
    let n = number(&f, "tasks", 100)?;
    let work_ms = number(&f, "work-ms", 1)? as u64;
    let store = Store::open(&db)?;
    let (mut d, replayed) =
        Durable::open(Scheduler::new(Config::default(), SystemClock::new()), store)?;
    if replayed.requeued + replayed.done + replayed.failed == 0 {
        let specs = (0..n)
            .map(|i| TaskSpec {
                payload: serde_json::json!({ "x": i }),
                ..TaskSpec::new(format!("square-{i}"))
            })
            .collect();
        d.submit_all(specs)?;
    }
    for w in 0..4 {
        d.sched.add_worker(w, 1.0);
    }
    loop {
        for w in 0..4 {
            d.sched.heartbeat(w)?;
        }
        let assignments = d.dispatch()?;
        if assignments.is_empty() && d.sched.running() == 0 && d.sched.queued() == 0 {
            break;
        }
        for a in assignments {
            std::thread::sleep(std::time::Duration::from_millis(work_ms));
            let x = a.payload["x"].as_u64().unwrap_or(0);
            d.complete(a.id, serde_json::json!(x * x))?;
        }
    }
    println!("DONE committed={}", d.store.results()?.len());
    Ok(())
}

/// The four-layer demo: gateway, registry, scheduler and store in this process; workers are
/// started per job.
fn demo(args: &[String]) -> Result<()> {
    use dmsc_scheduler::gateway::{serve, GatewayConfig};
    use dmsc_scheduler::registry::Backend;
    let f = flags(args)?;
    let token = match f.get("token") {
        Some(t) => t.clone(),
        None => std::env::var("DMSC_SERVE_TOKEN")
            .map_err(|_| Error::invalid("--token", "give --token or set DMSC_SERVE_TOKEN"))?,
    };
    if token.len() < 8 {
        return Err(Error::invalid("--token", "use at least 8 characters"));
    }
    // --registry, else DMSC_SERVE_REGISTRY, else in this process.
    let registry = match f.get("registry") {
        Some(r) => Backend::parse(r)?,
        None => match std::env::var("DMSC_SERVE_REGISTRY") {
            Ok(r) if !r.trim().is_empty() => Backend::parse(&r)?,
            _ => Backend::InProcess,
        },
    };
    let cfg = GatewayConfig {
        bind: f
            .get("bind")
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:8080".into()),
        token,
        db: PathBuf::from(
            f.get("db")
                .cloned()
                .unwrap_or_else(|| "dmsc-serve.sqlite".into()),
        ),
        slots: number(&f, "workers", 4)?,
        exe: std::env::current_exe().map_err(|e| Error::io("finding dmsc-serve", e))?,
        restarts: number(&f, "restarts", 3)?,
        registry,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    rt.block_on(serve(cfg))
}

/// One rank of a job (started by the gateway through dmsc's launcher).
fn worker(args: &[String]) -> Result<()> {
    use dmsc_scheduler::worker::{run, WorkerArgs};
    let f = flags(args)?;
    let spec = serde_json::from_str(required(&f, "spec")?).map_err(|source| Error::Json {
        what: "--spec".into(),
        source,
    })?;
    let cuts = required(&f, "cuts")?
        .split(',')
        .map(|c| {
            c.parse()
                .map_err(|_| Error::invalid("--cuts", format!("`{c}` is not a number")))
        })
        .collect::<Result<Vec<usize>>>()?;
    run(&WorkerArgs {
        job: number(&f, "job", 0)? as u64,
        spec,
        cuts,
        db: PathBuf::from(required(&f, "db")?),
        gateway: f.get("gateway").cloned(),
        token: f.get("token").cloned().unwrap_or_default(),
    })
}

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("plan") => plan(&args[1..]),
        Some("profile") => {
            let name = args
                .get(1)
                .ok_or_else(|| Error::invalid("profile", "name a model: resnet18 or gpt2-small"))?;
            let m = profiles::by_name(name).ok_or_else(|| {
                Error::invalid("profile", format!("`{name}` is not resnet18 or gpt2-small"))
            })?;
            println!(
                "{}",
                serde_json::to_string_pretty(&m).expect("a model serializes")
            );
            Ok(())
        }
        Some("probe") => probe_local(&args[1..]),
        Some("probe-rank") => probe_rank(&args[1..]),
        Some("sched-run") => sched_run(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("worker") => worker(&args[1..]),
        _ => Err(Error::invalid("command", USAGE)),
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DMSC_SERVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // DMSC_SERVE_LOG_JSON=1: one JSON object per event, for log collectors.
    if std::env::var("DMSC_SERVE_LOG_JSON").is_ok_and(|v| v == "1") {
        logs.json().init();
    } else {
        logs.init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmsc-serve: {e}");
            ExitCode::from(2)
        }
    }
}
