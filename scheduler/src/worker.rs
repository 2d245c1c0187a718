//! The computing layer: one worker process of a pipeline-parallel, data-parallel training job.
//!
//! Rank `r` of `P·D` runs stage `r mod P` of replica `r div P`. Each step runs GPipe's
//! schedule over dmsc send/recv: every micro-batch forward (activations to the next stage),
//! then every micro-batch backward in reverse order (gradients to the previous stage). The
//! stage's gradients are then summed over the replicas with an all-reduce on a communicator
//! split by stage, and SGD updates the weights. Replica 0 of each stage checkpoints its
//! weights into the store every `checkpoint_every` steps; a restarted job resumes from the
//! latest step every stage has checkpointed (rank 0 chooses it and broadcasts it). A thread
//! sends heartbeats to the gateway's service registry.

use crate::error::{Error, Result};
use crate::mlp::{self, JobSpec, Stage};
use crate::store::Store;
use dmsc::{Communicator, ReduceOp};
use std::path::PathBuf;
use std::time::Duration;

/// What a worker needs to know.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    /// The job's id.
    pub job: u64,
    /// The job.
    pub spec: JobSpec,
    /// Stage boundaries chosen by the control layer.
    pub cuts: Vec<usize>,
    /// The store (SQLite file).
    pub db: PathBuf,
    /// `http://host:port` of the gateway, for heartbeats.
    pub gateway: Option<String>,
    /// The gateway's token.
    pub token: String,
}

/// The store key of stage `s`'s checkpoints.
pub fn checkpoint_key(job: u64, s: usize) -> String {
    format!("job{job}/stage{s}")
}

/// The store key of a job's progress.
pub fn progress_key(job: u64) -> String {
    format!("job{job}/progress")
}

/// The store key of the steps a job resumed from.
pub fn resumed_key(job: u64) -> String {
    format!("job{job}/resumed")
}

const ACT: u32 = 0x4d4c_0001;
const GRAD: u32 = 0x4d4c_0002;

fn heartbeats(args: &WorkerArgs, rank: usize) {
    let Some(url) = args.gateway.clone() else {
        return;
    };
    let token = args.token.clone();
    let body = serde_json::json!({
        "service": "worker",
        "instance": format!("job{}-rank{rank}", args.job),
        "pid": std::process::id(),
        "job": args.job,
        "rank": rank,
    });
    std::thread::spawn(move || {
        let client = match reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
        {
            Ok(c) => c,
            Err(_) => return,
        };
        loop {
            let _ = client
                .post(format!("{url}/registry/heartbeat"))
                .bearer_auth(&token)
                .json(&body)
                .send();
            std::thread::sleep(Duration::from_millis(250));
        }
    });
}

/// The step to resume from: the latest one every stage has checkpointed (0: none).
fn resume_step(store: &Store, job: u64, stages: usize) -> Result<u64> {
    let mut step = u64::MAX;
    for s in 0..stages {
        match store.latest_checkpoint(&checkpoint_key(job, s))? {
            Some((k, _)) => step = step.min(k),
            None => return Ok(0),
        }
    }
    // Every stage has that step (checkpoints are kept, not replaced).
    for s in 0..stages {
        let mut k = step;
        while k > 0 && store.checkpoint_at(&checkpoint_key(job, s), k)?.is_none() {
            k -= 1;
        }
        step = step.min(k);
    }
    Ok(step)
}

/// Run this process's part of the job under dmscrun (or [`dmsc::launch`]).
pub fn run(args: &WorkerArgs) -> Result<()> {
    let spec = &args.spec;
    spec.validate()?;
    let comm = Communicator::from_env()?;
    let (rank, size) = (comm.rank(), comm.size());
    let (p, d) = (spec.stages, spec.replicas);
    if size != p * d {
        return Err(Error::invalid(
            "workers",
            format!("{size} ranks for {p} stages × {d} replicas"),
        ));
    }
    if args.cuts.len() != p + 1 || args.cuts[0] != 0 || args.cuts[p] != spec.layers() {
        return Err(Error::invalid(
            "cuts",
            format!(
                "{:?} does not cut {} layers into {p} stages",
                args.cuts,
                spec.layers()
            ),
        ));
    }
    let (stage, replica) = (rank % p, rank / p);
    heartbeats(args, rank);
    let dp = comm
        .split(Some(stage as u32), replica as i64)?
        .ok_or_else(|| Error::invalid("split", "this rank has no data-parallel group"))?;
    let mut store = Store::open(&args.db)?;
    let model = mlp::init(spec);
    let mut st = Stage::of(&model, &args.cuts, stage);
    // Rank 0 picks the resume step; everyone loads it.
    let mut start = [if rank == 0 {
        resume_step(&store, args.job, p)?
    } else {
        0
    }];
    comm.broadcast(&mut start, 0)?;
    let start = start[0];
    if start > 0 {
        let bytes = store
            .checkpoint_at(&checkpoint_key(args.job, stage), start)?
            .ok_or_else(|| {
                Error::invalid(
                    "checkpoint",
                    format!("stage {stage} has no checkpoint at step {start}"),
                )
            })?;
        st.set_params(&mlp::from_bytes(&bytes)?)?;
    }
    if rank == 0 {
        let mut resumed: Vec<u64> = store
            .meta(&resumed_key(args.job))?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        resumed.push(start);
        store.set_meta(
            &resumed_key(args.job),
            &serde_json::to_string(&resumed).expect("numbers"),
        )?;
    }
    tracing::info!(job = args.job, rank, stage, replica, start, layers = ?(args.cuts[stage]..args.cuts[stage + 1]), "worker started");
    let n = spec.micro_batch_size;
    let first = stage == 0;
    let last = st.is_last();
    let in_w = spec.sizes[args.cuts[stage]];
    let out_w = spec.sizes[args.cuts[stage + 1]];
    for step in start..spec.steps {
        let mut grads = vec![0f32; st.param_count()];
        let mut stash = Vec::with_capacity(spec.micro_batches);
        let mut out_grads = Vec::new();
        let mut loss = [0f64];
        for m in 0..spec.micro_batches {
            let (x, y) = if first || last {
                mlp::batch(spec, step, replica, m)
            } else {
                (vec![], vec![])
            };
            let x = if first {
                x
            } else {
                let mut h = vec![0f32; n * in_w];
                comm.recv(&mut h, rank - 1, ACT)?;
                h
            };
            let acts = st.forward(x, n);
            let out = &acts[acts.len() - 1];
            if last {
                let (g, l) = mlp::loss_grad(out, &y, spec.global_batch());
                loss[0] += l;
                out_grads.push(g);
            } else {
                comm.send(out, rank + 1, ACT)?;
            }
            stash.push(acts);
        }
        for m in (0..spec.micro_batches).rev() {
            let g = if last {
                std::mem::take(&mut out_grads[m])
            } else {
                let mut g = vec![0f32; n * out_w];
                comm.recv(&mut g, rank + 1, GRAD)?;
                g
            };
            let gx = st.backward(&stash[m], g, n, &mut grads);
            if !first {
                comm.send(&gx, rank - 1, GRAD)?;
            }
        }
        dp.all_reduce_in_place(&mut grads, ReduceOp::Sum)?;
        st.sgd(&grads, spec.lr);
        let done = step + 1;
        if last {
            dp.all_reduce_in_place(&mut loss, ReduceOp::Sum)?;
            if replica == 0 {
                let progress =
                    serde_json::json!({ "step": done, "steps": spec.steps, "loss": loss[0] });
                store.set_meta(&progress_key(args.job), &progress.to_string())?;
            }
        }
        if replica == 0 && (done % spec.checkpoint_every == 0 || done == spec.steps) {
            store.put_checkpoint(
                &checkpoint_key(args.job, stage),
                done,
                &mlp::to_bytes(&st.params()),
            )?;
            tracing::debug!(job = args.job, stage, step = done, "checkpoint");
        }
        if spec.step_ms > 0 {
            std::thread::sleep(Duration::from_millis(spec.step_ms));
        }
    }
    comm.barrier()?;
    Ok(())
}
