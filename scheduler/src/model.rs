//! The model description: a chain of layers (the backbone) and optional task heads that
//! share it. Costs are per micro-batch; FLOPs and bytes are integers so that every strategy
//! sums them exactly the same way.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One layer of a model, as the segmentation sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// A name for logs and plans (e.g. `layer2.0.conv1`).
    pub name: String,
    /// Forward FLOPs for one micro-batch.
    pub fwd_flops: u64,
    /// Backward FLOPs for one micro-batch (usually twice the forward).
    pub bwd_flops: u64,
    /// Bytes of the layer's parameters.
    pub param_bytes: u64,
    /// Bytes that cross a stage boundary cut right after this layer, per micro-batch (its
    /// output plus any skip connection still alive). The gradient of the same size flows back.
    pub activation_bytes: u64,
    /// Bytes the layer occupies on its rank during training: weights, gradients, optimizer
    /// state and stashed activations.
    pub memory_bytes: u64,
}

impl Layer {
    /// Forward plus backward FLOPs.
    pub fn flops(&self) -> u64 {
        self.fwd_flops.saturating_add(self.bwd_flops)
    }
}

/// A task head: a short chain of layers that reads the backbone's last output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The task's name (e.g. `classify`).
    pub name: String,
    /// The head's layers, in order.
    pub layers: Vec<Layer>,
}

/// A model: the backbone chain and its heads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDesc {
    /// The model's name.
    pub name: String,
    /// Micro-batch size the costs were computed for (informational).
    #[serde(default = "one")]
    pub micro_batch: u64,
    /// The backbone, in order.
    pub layers: Vec<Layer>,
    /// Task heads sharing the backbone (business-based segmentation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<Head>,
}

fn one() -> u64 {
    1
}

/// Sums must stay far below 2^53 so that converting them to `f64` is exact.
const MAX_TOTAL: u64 = 1 << 52;

impl ModelDesc {
    /// Parse and validate a model from JSON text.
    pub fn from_json(text: &str) -> Result<ModelDesc> {
        let m: ModelDesc = serde_json::from_str(text).map_err(|source| Error::Json {
            what: "model description".into(),
            source,
        })?;
        m.validate()?;
        Ok(m)
    }

    /// Read, parse and validate a model file.
    pub fn load(path: &std::path::Path) -> Result<ModelDesc> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading model {}", path.display()), e))?;
        ModelDesc::from_json(&text)
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if self.micro_batch == 0 {
            return Err(Error::invalid("micro_batch", "must be at least 1"));
        }
        if self.layers.is_empty() {
            return Err(Error::invalid("layers", "a model needs at least one layer"));
        }
        check_chain("layers", &self.layers)?;
        let mut names = std::collections::HashSet::new();
        for (h, head) in self.heads.iter().enumerate() {
            if head.name.trim().is_empty() {
                return Err(Error::invalid(
                    format!("heads[{h}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(head.name.as_str()) {
                return Err(Error::invalid(
                    format!("heads[{h}].name"),
                    format!("duplicate head name `{}`", head.name),
                ));
            }
            if head.layers.is_empty() {
                return Err(Error::invalid(
                    format!("heads[{h}].layers"),
                    "a head needs at least one layer",
                ));
            }
            check_chain(&format!("heads[{h}].layers"), &head.layers)?;
        }
        Ok(())
    }

    /// Total forward+backward FLOPs of the backbone.
    pub fn total_flops(&self) -> u64 {
        self.layers.iter().map(Layer::flops).sum()
    }

    /// Total parameter bytes, backbone and heads.
    pub fn total_param_bytes(&self) -> u64 {
        self.layers
            .iter()
            .chain(self.heads.iter().flat_map(|h| h.layers.iter()))
            .map(|l| l.param_bytes)
            .sum()
    }
}

fn check_chain(path: &str, layers: &[Layer]) -> Result<()> {
    let (mut flops, mut act, mut mem) = (0u64, 0u64, 0u64);
    for (i, l) in layers.iter().enumerate() {
        let at = |f: &str| format!("{path}[{i}].{f}");
        if l.name.trim().is_empty() {
            return Err(Error::invalid(at("name"), "must not be empty"));
        }
        if l.flops() == 0 {
            return Err(Error::invalid(
                at("fwd_flops"),
                "a layer must cost something (fwd_flops + bwd_flops > 0)",
            ));
        }
        flops = flops.saturating_add(l.flops());
        act = act.saturating_add(l.activation_bytes);
        mem = mem
            .saturating_add(l.memory_bytes)
            .saturating_add(l.param_bytes);
        for (total, f) in [
            (flops, "fwd_flops"),
            (act, "activation_bytes"),
            (mem, "memory_bytes"),
        ] {
            if total >= MAX_TOTAL {
                return Err(Error::invalid(
                    at(f),
                    format!("the model's total exceeds 2^52 ({MAX_TOTAL}); use coarser units"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> Layer {
        Layer {
            name: name.into(),
            fwd_flops: 10,
            bwd_flops: 20,
            param_bytes: 4,
            activation_bytes: 8,
            memory_bytes: 16,
        }
    }

    #[test]
    fn round_trips_and_validates() {
        let m = ModelDesc {
            name: "m".into(),
            micro_batch: 1,
            layers: vec![layer("a"), layer("b")],
            heads: vec![],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(ModelDesc::from_json(&text).unwrap(), m);
    }

    #[test]
    fn errors_name_the_field() {
        let mut m = ModelDesc {
            name: "m".into(),
            micro_batch: 1,
            layers: vec![layer("a"), layer("b")],
            heads: vec![Head {
                name: "h".into(),
                layers: vec![],
            }],
        };
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("heads[0].layers"), "{e}");
        m.heads.clear();
        m.layers[1].fwd_flops = 0;
        m.layers[1].bwd_flops = 0;
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("layers[1].fwd_flops"), "{e}");
        let e = ModelDesc::from_json(r#"{"name":"x","layers":[{"name":"a"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fwd_flops"), "{e}");
        let e = ModelDesc::from_json(r#"{"name":"x","layers":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`layers`"), "{e}");
    }
}
