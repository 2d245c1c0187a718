//! Block-based and business-based segmentation on models made for them.

use dmsc_scheduler::cluster::ClusterDesc;
use dmsc_scheduler::model::{Head, Layer, ModelDesc};
use dmsc_scheduler::segment::{Block, Business, Dp, Problem, Strategy};

fn layer(name: &str, f: u64, act: u64) -> Layer {
    Layer {
        name: name.into(),
        fwd_flops: f,
        bwd_flops: 2 * f,
        param_bytes: 1000,
        activation_bytes: act,
        memory_bytes: 1000,
    }
}

#[test]
fn block_splits_a_dominant_layer_that_no_cut_can_help() {
    let mut layers: Vec<Layer> = (0..12)
        .map(|i| layer(&format!("l{i}"), 1_000_000, 1000))
        .collect();
    layers[5] = layer("giant", 40_000_000, 1000);
    let model = ModelDesc {
        name: "giant".into(),
        micro_batch: 1,
        layers,
        heads: vec![],
    };
    let cluster = ClusterDesc::homogeneous(8, 1e9, 1 << 30, 1e10);
    let p = Problem::new(&model, &cluster);
    let dp = Dp.plan(&p).unwrap();
    let block = Block.plan(&p).unwrap();
    // DP cannot go below the giant layer alone: 120 MFLOP at 1 GFLOP/s.
    assert!(dp.bottleneck_s >= 0.12, "{}", dp.bottleneck_s);
    let group = block
        .stages
        .iter()
        .find(|s| s.ranks.len() > 1)
        .expect("a tensor-parallel stage");
    assert_eq!((group.first_layer, group.end_layer), (5, 6));
    assert!(
        block.bottleneck_s < dp.bottleneck_s / 2.0,
        "block {} vs dp {}",
        block.bottleneck_s,
        dp.bottleneck_s
    );
    let ranks: Vec<usize> = block.stages.iter().flat_map(|s| s.ranks.clone()).collect();
    let mut sorted = ranks.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ranks.len(), "a rank used twice: {ranks:?}");
    println!(
        "RESULT block: dp bottleneck {:.4} s, block {:.4} s with a group of {}",
        dp.bottleneck_s,
        block.bottleneck_s,
        group.ranks.len()
    );
}

#[test]
fn business_places_heads_apart_or_together() {
    let layers: Vec<Layer> = (0..8)
        .map(|i| layer(&format!("b{i}"), 1_000_000, 1000))
        .collect();
    let heavy = |n: &str| Head {
        name: n.into(),
        layers: vec![layer(&format!("{n}.0"), 3_000_000, 10)],
    };
    let model = ModelDesc {
        name: "mt".into(),
        micro_batch: 1,
        layers: layers.clone(),
        heads: vec![heavy("cls"), heavy("seg")],
    };
    let cluster = ClusterDesc::homogeneous(4, 1e9, 1 << 30, 1e10);
    let p = Problem::new(&model, &cluster);
    let plan = Business.plan(&p).unwrap();
    // Heavy heads get ranks of their own: 2 backbone stages + 2 head stages.
    let heads: Vec<&str> = plan
        .stages
        .iter()
        .filter(|s| s.part.starts_with("head:"))
        .map(|s| s.part.as_str())
        .collect();
    assert_eq!(heads, ["head:cls", "head:seg"], "{plan:?}");
    assert_eq!(plan.cuts.len(), 3);
    // Tiny heads ride on the last backbone stage.
    let light = |n: &str| Head {
        name: n.into(),
        layers: vec![layer(&format!("{n}.0"), 1_000, 10)],
    };
    let model2 = ModelDesc {
        heads: vec![light("a"), light("b")],
        ..model
    };
    let p2 = Problem::new(&model2, &cluster);
    let plan2 = Business.plan(&p2).unwrap();
    assert!(
        plan2.stages.iter().all(|s| s.part == "backbone"),
        "{plan2:?}"
    );
    assert_eq!(plan2.cuts.len(), 5);
    // A model without heads is refused by name.
    let none = ModelDesc {
        heads: vec![],
        ..model2
    };
    let e = Business
        .plan(&Problem::new(&none, &cluster))
        .unwrap_err()
        .to_string();
    assert!(e.contains("heads"), "{e}");
}
