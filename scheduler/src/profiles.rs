//! Profiles of two real models computed from their architectures: ResNet-18 (ImageNet,
//! 224×224) and GPT-2 small (124M, 1024-token context). FLOPs count a multiply-add as two;
//! the backward pass costs twice the forward. Tensors are fp32. A layer's memory is its
//! gradients and two Adam moments (3× its parameters; the weights are `param_bytes`) plus the
//! activations it stashes for the backward pass.
//!
//! The shipped files `profiles/resnet18.json` and `profiles/gpt2-small.json` are these
//! functions' output (`dmsc-serve profile resnet18`), checked by a test.

use crate::model::{Layer, ModelDesc};

const F32: u64 = 4;

fn layer(name: String, fwd: u64, params: u64, act_elems: u64, stash_elems: u64) -> Layer {
    Layer {
        name,
        fwd_flops: fwd,
        bwd_flops: 2 * fwd,
        param_bytes: params * F32,
        activation_bytes: act_elems * F32,
        memory_bytes: 3 * params * F32 + stash_elems * F32,
    }
}

/// A convolution with batch norm and ReLU: (forward FLOPs, parameters, output elements),
/// per image.
fn conv_bn(cin: u64, cout: u64, k: u64, hout: u64) -> (u64, u64, u64) {
    let out = cout * hout * hout;
    let macs = cin * k * k * out;
    // BN (scale and shift) and ReLU: about 4 FLOPs per output element.
    (2 * macs + 4 * out, cin * cout * k * k + 2 * cout, out)
}

/// ResNet-18 for `batch` images per micro-batch: the stem, the pool, both convolutions of
/// each of the eight basic blocks (the downsampling 1×1 convolution counted with the block's
/// second), the average pool and the classifier: 20 layers, 11,689,512 parameters.
pub fn resnet18(batch: u64) -> ModelDesc {
    let mut layers = Vec::new();
    let (f, p, out) = conv_bn(3, 64, 7, 112);
    layers.push(layer(
        "conv1".into(),
        f * batch,
        p,
        out * batch,
        (out + 3 * 224 * 224) * batch,
    ));
    let pooled = 64 * 56 * 56;
    layers.push(layer(
        "maxpool".into(),
        9 * pooled * batch,
        0,
        pooled * batch,
        pooled * batch,
    ));
    let mut cin: u64 = 64;
    let mut h: u64 = 56;
    for (stage, cout) in [(1u64, 64u64), (2, 128), (3, 256), (4, 512)] {
        for block in 0..2 {
            let down = block == 0 && stage > 1;
            if down {
                h /= 2;
            }
            let input = cin * (if down { h * 2 } else { h }).pow(2);
            let (f1, p1, o1) = conv_bn(cin, cout, 3, h);
            // A cut after conv1 carries its output and the block's input (the skip).
            layers.push(layer(
                format!("layer{stage}.{block}.conv1"),
                f1 * batch,
                p1,
                (o1 + input) * batch,
                o1 * batch,
            ));
            let (mut f2, mut p2, o2) = conv_bn(cout, cout, 3, h);
            if down {
                let (fd, pd, _) = conv_bn(cin, cout, 1, h);
                f2 += fd;
                p2 += pd;
            }
            // The residual add.
            f2 += o2;
            layers.push(layer(
                format!("layer{stage}.{block}.conv2"),
                f2 * batch,
                p2,
                o2 * batch,
                2 * o2 * batch,
            ));
            cin = cout;
        }
    }
    layers.push(layer(
        "avgpool".into(),
        512 * 49 * batch,
        0,
        512 * batch,
        512 * batch,
    ));
    layers.push(layer(
        "fc".into(),
        2 * 512 * 1000 * batch,
        512 * 1000 + 1000,
        1000 * batch,
        1000 * batch,
    ));
    ModelDesc {
        name: "resnet18".into(),
        micro_batch: batch,
        layers,
        heads: vec![],
    }
}

/// GPT-2 small (12 layers, d = 768, 12 heads, vocabulary 50,257, context 1024) for `batch`
/// sequences of 1024 tokens per micro-batch: the embeddings, the attention and MLP half of
/// each block, and the final norm with the language-model head: 26 layers. The head's weight
/// is tied to the token embedding; a stage holding it keeps its own copy, so the layers'
/// parameters sum to 124,439,808 + 50,257·768.
pub fn gpt2_small(batch: u64) -> ModelDesc {
    let (v, t, d, nl, nh) = (50_257u64, 1024u64, 768u64, 12u64, 12u64);
    let tokens = t * batch;
    let hidden = tokens * d;
    let mut layers = vec![layer(
        "wte+wpe".into(),
        hidden,
        v * d + t * d,
        hidden,
        hidden,
    )];
    for i in 0..nl {
        // ln_1, c_attn (d→3d), scores QKᵀ and the weighted sum, c_proj (d→d).
        let attn_flops = 5 * hidden
            + 2 * tokens * d * 3 * d
            + 2 * 2 * batch * t * t * d
            + 2 * tokens * d * d
            + batch * nh * t * t * 5;
        let attn_params = 2 * d + (d * 3 * d + 3 * d) + (d * d + d);
        let attn_stash = hidden + 3 * hidden + 2 * batch * nh * t * t + hidden;
        layers.push(layer(
            format!("h{i}.attn"),
            attn_flops,
            attn_params,
            hidden,
            attn_stash,
        ));
        // ln_2, c_fc (d→4d), GELU, c_proj (4d→d), the residual adds.
        let mlp_flops = 5 * hidden
            + 2 * tokens * d * 4 * d
            + 8 * 4 * hidden
            + 2 * tokens * 4 * d * d
            + 2 * hidden;
        let mlp_params = 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d);
        let mlp_stash = hidden + 4 * hidden + 4 * hidden + hidden;
        layers.push(layer(
            format!("h{i}.mlp"),
            mlp_flops,
            mlp_params,
            hidden,
            mlp_stash,
        ));
    }
    layers.push(layer(
        "ln_f+lm_head".into(),
        5 * hidden + 2 * tokens * d * v,
        2 * d + v * d,
        tokens * v,
        tokens * v,
    ));
    ModelDesc {
        name: "gpt2-small".into(),
        micro_batch: batch,
        layers,
        heads: vec![],
    }
}

/// The profile called `name` (`resnet18` with 32 images or `gpt2-small` with 4 sequences per
/// micro-batch, as shipped).
pub fn by_name(name: &str) -> Option<ModelDesc> {
    match name {
        "resnet18" => Some(resnet18(32)),
        "gpt2-small" => Some(gpt2_small(4)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet18_matches_the_published_counts() {
        let m = resnet18(1);
        m.validate().unwrap();
        assert_eq!(m.layers.len(), 20);
        assert_eq!(m.total_param_bytes() / 4, 11_689_512);
        // torchvision: 1.814 GMACs per 224×224 image.
        let fwd: u64 = m.layers.iter().map(|l| l.fwd_flops).sum();
        assert!((3.60e9..3.70e9).contains(&(fwd as f64)), "{fwd}");
    }

    #[test]
    fn gpt2_small_matches_the_published_counts() {
        let m = gpt2_small(1);
        m.validate().unwrap();
        assert_eq!(m.layers.len(), 26);
        assert_eq!(m.total_param_bytes() / 4, 124_439_808 + 50_257 * 768);
        // Narayanan et al. (Megatron-LM, 2021): forward = 24·s·h² + 4·s²·h per layer per
        // sequence, plus 2·s·h·V for the logits (matrix multiplications only).
        let fwd: u64 = m.layers.iter().map(|l| l.fwd_flops).sum();
        let (s, h, v) = (1024.0f64, 768.0f64, 50_257.0f64);
        let megatron = 12.0 * (24.0 * s * h * h + 4.0 * s * s * h) + 2.0 * s * h * v;
        assert!(
            (fwd as f64 / megatron - 1.0).abs() < 0.01,
            "{fwd} vs {megatron}"
        );
    }

    #[test]
    fn shipped_profiles_are_these_functions_output() {
        for (name, file) in [
            ("resnet18", "resnet18.json"),
            ("gpt2-small", "gpt2-small.json"),
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("profiles")
                .join(file);
            let shipped = ModelDesc::load(&path).unwrap();
            assert_eq!(
                shipped,
                by_name(name).unwrap(),
                "{file} is stale: regenerate with dmsc-serve profile {name}"
            );
        }
    }
}
