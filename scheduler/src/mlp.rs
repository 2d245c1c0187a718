//! The demo's model: a small multilayer perceptron in plain Rust (dense layers, ReLU between
//! them, mean squared error), trained by SGD on a deterministic synthetic regression task.
//!
//! The same stage functions run in the pipeline workers ([`crate::worker`]) and in the
//! single-process reference ([`train_reference`]), in the same order of floating-point
//! operations, so the two produce bit-identical weights when the data-parallel all-reduce
//! sums two replicas (`a + b` is commutative in IEEE arithmetic).

use crate::error::{Error, Result};
use crate::model::{Layer, ModelDesc};
use serde::{Deserialize, Serialize};

/// A training job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Layer widths, input first: `sizes[i] → sizes[i+1]` is layer `i`.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<usize>,
    /// SGD steps.
    #[serde(default = "default_steps")]
    pub steps: u64,
    /// Micro-batches per step and replica (the pipeline's B).
    #[serde(default = "default_micro")]
    pub micro_batches: usize,
    /// Samples per micro-batch.
    #[serde(default = "default_mbs")]
    pub micro_batch_size: usize,
    /// Learning rate.
    #[serde(default = "default_lr")]
    pub lr: f32,
    /// Seed of weights and data.
    #[serde(default)]
    pub seed: u64,
    /// Pipeline stages.
    #[serde(default = "two")]
    pub stages: usize,
    /// Data-parallel replicas of the pipeline.
    #[serde(default = "two")]
    pub replicas: usize,
    /// Steps between checkpoints.
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: u64,
    /// Milliseconds each step sleeps (to watch and to kill the demo mid-job).
    #[serde(default)]
    pub step_ms: u64,
}

fn default_sizes() -> Vec<usize> {
    vec![16, 64, 64, 64, 64, 4]
}
fn default_steps() -> u64 {
    50
}
fn default_micro() -> usize {
    4
}
fn default_mbs() -> usize {
    8
}
fn default_lr() -> f32 {
    0.05
}
fn two() -> usize {
    2
}
fn default_ckpt() -> u64 {
    5
}

impl Default for JobSpec {
    fn default() -> JobSpec {
        serde_json::from_str("{}").expect("defaults parse")
    }
}

impl JobSpec {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.sizes.len() < 2 {
            return Err(Error::invalid(
                "sizes",
                "needs an input and at least one layer",
            ));
        }
        if let Some(i) = self.sizes.iter().position(|&s| s == 0 || s > 4096) {
            return Err(Error::invalid(format!("sizes[{i}]"), "must be in 1..=4096"));
        }
        let layers = self.sizes.len() - 1;
        if self.stages == 0 || self.stages > layers {
            return Err(Error::invalid(
                "stages",
                format!("{} stages for {layers} layers", self.stages),
            ));
        }
        if self.replicas == 0 || self.stages * self.replicas > 64 {
            return Err(Error::invalid(
                "replicas",
                "stages × replicas must be in 1..=64",
            ));
        }
        if self.steps == 0 || self.steps > 1_000_000 {
            return Err(Error::invalid("steps", "must be in 1..=1000000"));
        }
        if self.micro_batches == 0 || self.micro_batches > 1024 {
            return Err(Error::invalid("micro_batches", "must be in 1..=1024"));
        }
        if self.micro_batch_size == 0 || self.micro_batch_size > 4096 {
            return Err(Error::invalid("micro_batch_size", "must be in 1..=4096"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid("lr", "must be a positive number"));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::invalid("checkpoint_every", "must be at least 1"));
        }
        if self.step_ms > 10_000 {
            return Err(Error::invalid("step_ms", "at most 10000"));
        }
        Ok(())
    }

    /// Number of dense layers.
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Worker processes: stages × replicas.
    pub fn workers(&self) -> usize {
        self.stages * self.replicas
    }

    /// Samples per step over all replicas.
    pub fn global_batch(&self) -> usize {
        self.micro_batches * self.micro_batch_size * self.replicas
    }

    /// The model description the control layer segments (per micro-batch, fp32).
    pub fn model_desc(&self) -> ModelDesc {
        let n = self.micro_batch_size as u64;
        ModelDesc {
            name: "demo-mlp".into(),
            micro_batch: n,
            layers: (0..self.layers())
                .map(|i| {
                    let (a, b) = (self.sizes[i] as u64, self.sizes[i + 1] as u64);
                    let params = a * b + b;
                    Layer {
                        name: format!("dense{i}"),
                        fwd_flops: 2 * n * a * b,
                        bwd_flops: 4 * n * a * b,
                        param_bytes: 4 * params,
                        activation_bytes: 4 * n * b,
                        memory_bytes: 4 * params + 4 * n * b * self.micro_batches as u64,
                    }
                })
                .collect(),
            heads: vec![],
        }
    }
}

/// A dense layer: `y = W x + b`, `W` row-major `out × inp`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Input width.
    pub inp: usize,
    /// Output width.
    pub out: usize,
    /// Weights.
    pub w: Vec<f32>,
    /// Biases.
    pub b: Vec<f32>,
}

/// xorshift64* stream.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(0x2545_f491_4f6c_dd1d)
            | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The initial weights of every layer.
pub fn init(spec: &JobSpec) -> Vec<Dense> {
    (0..spec.layers())
        .map(|i| {
            let (inp, out) = (spec.sizes[i], spec.sizes[i + 1]);
            let mut r = Rng::new(spec.seed ^ (0x1000 + i as u64));
            let scale = (1.0 / inp as f32).sqrt();
            Dense {
                inp,
                out,
                w: (0..inp * out).map(|_| r.sym() * scale).collect(),
                b: vec![0.0; out],
            }
        })
        .collect()
}

/// Inputs and targets of micro-batch `micro` of `replica` at `step`: `x` uniform in
/// [-1, 1), `y_k = sin(Σ_i a_ki x_i)` for a fixed teacher matrix `a`.
pub fn batch(spec: &JobSpec, step: u64, replica: usize, micro: usize) -> (Vec<f32>, Vec<f32>) {
    let (inp, out) = (spec.sizes[0], spec.sizes[spec.layers()]);
    let n = spec.micro_batch_size;
    let mut teacher = Rng::new(spec.seed ^ 0xfeed);
    let a: Vec<f32> = (0..inp * out).map(|_| teacher.sym()).collect();
    let index =
        (step * spec.replicas as u64 + replica as u64) * spec.micro_batches as u64 + micro as u64;
    let mut r = Rng::new(spec.seed ^ (index << 20) ^ 0xda7a);
    let x: Vec<f32> = (0..n * inp).map(|_| r.sym()).collect();
    let mut y = vec![0f32; n * out];
    for s in 0..n {
        for k in 0..out {
            let z: f32 = (0..inp).map(|i| a[k * inp + i] * x[s * inp + i]).sum();
            y[s * out + k] = z.sin();
        }
    }
    (x, y)
}

/// A pipeline stage: layers `first..first + layers.len()` of a model of `total` layers.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Index of its first layer.
    pub first: usize,
    /// Layers in the model.
    pub total: usize,
    /// Its layers.
    pub layers: Vec<Dense>,
}

impl Stage {
    /// Layers `cuts[s]..cuts[s+1]` of `model`.
    pub fn of(model: &[Dense], cuts: &[usize], s: usize) -> Stage {
        Stage {
            first: cuts[s],
            total: model.len(),
            layers: model[cuts[s]..cuts[s + 1]].to_vec(),
        }
    }

    /// True when it holds the model's last layer.
    pub fn is_last(&self) -> bool {
        self.first + self.layers.len() == self.total
    }

    fn relu(&self, l: usize) -> bool {
        self.first + l + 1 < self.total
    }

    /// Forward `n` samples; returns the input and each layer's output (for backward).
    pub fn forward(&self, x: Vec<f32>, n: usize) -> Vec<Vec<f32>> {
        let mut acts = vec![x];
        for (l, d) in self.layers.iter().enumerate() {
            let x = &acts[l];
            let mut y = vec![0f32; n * d.out];
            for s in 0..n {
                for o in 0..d.out {
                    let mut z = d.b[o];
                    for i in 0..d.inp {
                        z += d.w[o * d.inp + i] * x[s * d.inp + i];
                    }
                    y[s * d.out + o] = if self.relu(l) { z.max(0.0) } else { z };
                }
            }
            acts.push(y);
        }
        acts
    }

    /// Backward from the output gradient `gy`, adding parameter gradients to `grads` (the
    /// layout of [`Stage::params`]); returns the input gradient.
    pub fn backward(
        &self,
        acts: &[Vec<f32>],
        mut gy: Vec<f32>,
        n: usize,
        grads: &mut [f32],
    ) -> Vec<f32> {
        let offsets = self.offsets();
        for l in (0..self.layers.len()).rev() {
            let d = &self.layers[l];
            let (x, y) = (&acts[l], &acts[l + 1]);
            if self.relu(l) {
                for (g, &v) in gy.iter_mut().zip(y) {
                    if v <= 0.0 {
                        *g = 0.0;
                    }
                }
            }
            let (gw, gb) = grads[offsets[l]..offsets[l + 1]].split_at_mut(d.inp * d.out);
            let mut gx = vec![0f32; n * d.inp];
            for s in 0..n {
                for o in 0..d.out {
                    let g = gy[s * d.out + o];
                    gb[o] += g;
                    for i in 0..d.inp {
                        gw[o * d.inp + i] += g * x[s * d.inp + i];
                        gx[s * d.inp + i] += g * d.w[o * d.inp + i];
                    }
                }
            }
            gy = gx;
        }
        gy
    }

    fn offsets(&self) -> Vec<usize> {
        let mut o = vec![0];
        for d in &self.layers {
            o.push(o[o.len() - 1] + d.w.len() + d.b.len());
        }
        o
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.layers.iter().map(|d| d.w.len() + d.b.len()).sum()
    }

    /// Parameters flattened: each layer's weights then biases.
    pub fn params(&self) -> Vec<f32> {
        self.layers
            .iter()
            .flat_map(|d| d.w.iter().chain(&d.b).copied())
            .collect()
    }

    /// Set the parameters from [`Stage::params`]'s layout.
    pub fn set_params(&mut self, p: &[f32]) -> Result<()> {
        if p.len() != self.param_count() {
            return Err(Error::invalid(
                "checkpoint",
                format!(
                    "{} parameters, the stage has {}",
                    p.len(),
                    self.param_count()
                ),
            ));
        }
        let mut at = 0;
        for d in &mut self.layers {
            let (nw, nb) = (d.w.len(), d.b.len());
            d.w.copy_from_slice(&p[at..at + nw]);
            d.b.copy_from_slice(&p[at + nw..at + nw + nb]);
            at += nw + nb;
        }
        Ok(())
    }

    /// `p -= lr · g` on every parameter.
    pub fn sgd(&mut self, grads: &[f32], lr: f32) {
        let mut at = 0;
        for d in &mut self.layers {
            for v in d.w.iter_mut().chain(d.b.iter_mut()) {
                *v -= lr * grads[at];
                at += 1;
            }
        }
    }
}

/// Mean-squared-error gradient (over the global batch) and loss contribution of one
/// micro-batch's output.
pub fn loss_grad(out: &[f32], y: &[f32], global_batch: usize) -> (Vec<f32>, f64) {
    let scale = 1.0 / global_batch as f32;
    let mut loss = 0.0f64;
    let g = out
        .iter()
        .zip(y)
        .map(|(&o, &t)| {
            let d = o - t;
            loss += 0.5 * (d as f64) * (d as f64) / global_batch as f64;
            d * scale
        })
        .collect();
    (g, loss)
}

/// Bytes of a parameter vector (little-endian f32) for checkpoints.
pub fn to_bytes(p: &[f32]) -> Vec<u8> {
    p.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The parameter vector of [`to_bytes`]' bytes.
pub fn from_bytes(b: &[u8]) -> Result<Vec<f32>> {
    if b.len() % 4 != 0 {
        return Err(Error::invalid(
            "checkpoint",
            format!("{} bytes is not a whole number of f32", b.len()),
        ));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Train in one process with the pipeline's exact order of operations; returns every
/// stage's final parameters and the last step's loss.
pub fn train_reference(spec: &JobSpec, cuts: &[usize]) -> (Vec<Vec<f32>>, f64) {
    let model = init(spec);
    let p = cuts.len() - 1;
    let mut stages: Vec<Stage> = (0..p).map(|s| Stage::of(&model, cuts, s)).collect();
    let n = spec.micro_batch_size;
    let mut last_loss = 0.0;
    for step in 0..spec.steps {
        let mut total: Vec<Vec<f32>> = stages.iter().map(|s| vec![0f32; s.param_count()]).collect();
        let mut loss = 0.0;
        for replica in 0..spec.replicas {
            let mut grads: Vec<Vec<f32>> =
                stages.iter().map(|s| vec![0f32; s.param_count()]).collect();
            let mut stash: Vec<Vec<Vec<Vec<f32>>>> = Vec::new();
            let mut out_grads = Vec::new();
            for m in 0..spec.micro_batches {
                let (x, y) = batch(spec, step, replica, m);
                let mut per_stage = Vec::new();
                let mut h = x;
                for st in &stages {
                    let acts = st.forward(h, n);
                    h = acts[acts.len() - 1].clone();
                    per_stage.push(acts);
                }
                let (g, l) = loss_grad(&h, &y, spec.global_batch());
                loss += l;
                out_grads.push(g);
                stash.push(per_stage);
            }
            for m in (0..spec.micro_batches).rev() {
                let mut g = std::mem::take(&mut out_grads[m]);
                for s in (0..p).rev() {
                    g = stages[s].backward(&stash[m][s], g, n, &mut grads[s]);
                }
            }
            for s in 0..p {
                for (t, g) in total[s].iter_mut().zip(&grads[s]) {
                    *t += g;
                }
            }
        }
        for s in 0..p {
            stages[s].sgd(&total[s], spec.lr);
        }
        last_loss = loss;
    }
    (stages.iter().map(Stage::params).collect(), last_loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_learns_and_gradients_are_right() {
        let spec = JobSpec {
            steps: 200,
            lr: 0.1,
            ..JobSpec::default()
        };
        spec.validate().unwrap();
        let (_, first) = train_reference(
            &JobSpec {
                steps: 1,
                ..spec.clone()
            },
            &[0, 2, 5],
        );
        let (_, last) = train_reference(&spec, &[0, 2, 5]);
        assert!(last < first * 0.7, "loss {first} -> {last}");
        // Finite-difference check of one weight of the first layer.
        let small = JobSpec {
            sizes: vec![3, 4, 2],
            micro_batch_size: 2,
            micro_batches: 1,
            replicas: 1,
            stages: 1,
            ..spec
        };
        let model = init(&small);
        let st = Stage::of(&model, &[0, 2], 0);
        let (x, y) = batch(&small, 0, 0, 0);
        let loss_of = |s: &Stage| {
            let a = s.forward(x.clone(), 2);
            loss_grad(&a[a.len() - 1], &y, 2).1
        };
        let acts = st.forward(x.clone(), 2);
        let (g, _) = loss_grad(&acts[acts.len() - 1], &y, 2);
        let mut grads = vec![0f32; st.param_count()];
        st.backward(&acts, g, 2, &mut grads);
        let eps = 1e-3;
        let mut p = st.params();
        p[1] += eps;
        let mut plus = st.clone();
        plus.set_params(&p).unwrap();
        p[1] -= 2.0 * eps;
        let mut minus = st.clone();
        minus.set_params(&p).unwrap();
        let fd = (loss_of(&plus) - loss_of(&minus)) / (2.0 * eps as f64);
        assert!(
            (fd - grads[1] as f64).abs() < 1e-3,
            "fd {fd} vs {}",
            grads[1]
        );
    }
}
