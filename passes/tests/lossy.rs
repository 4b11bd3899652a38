//! The `lossy` pass: nothing unless asked; with PrFlashAttention requested,
//! causal attention without bias or slopes becomes `prflash_attention`, the
//! rest stays exact; the option parser names bad parts.

mod common;

use common::count;
use kiln_ir::attention::AttentionOp;
use kiln_ir::dsl::ModelBuilder;
use kiln_ir::op::F64Bits;
use kiln_ir::{shape, DType, Dim, Graph, Op};
use kiln_passes::lossy::{Lossy, PrFlashConfig};
use kiln_passes::{Pass, PassOptions};

fn graph() -> Graph {
    let b = ModelBuilder::new("two");
    let q = b.input("q", DType::F32, shape![2, "seq", 8]);
    let k = b.input("k", DType::F32, shape![2, "past+seq", 8]);
    let op = |causal: bool, offset: Dim| AttentionOp {
        scale: F64Bits(0.5),
        causal,
        offset,
        bias: false,
        slopes: vec![],
        kv_len: None,
    };
    let causal = q.flash_attention(&k, &k, None, op(true, Dim::from("past")));
    let full = q.flash_attention(&k, &k, None, op(false, Dim::from(0)));
    b.output("a", &causal);
    b.output("b", &full);
    b.finish().unwrap()
}

#[test]
fn does_nothing_unless_requested() {
    let g = graph();
    let (out, detail) = Lossy
        .run_with_detail(g.clone(), &PassOptions::default())
        .unwrap();
    assert_eq!(out, g);
    assert!(detail.contains("none requested"), "{detail}");
}

#[test]
fn causal_attention_becomes_prflash_and_the_rest_stays_exact() {
    let opts = PassOptions {
        prflash: Some(PrFlashConfig::parse("prflash:block=32,c=2,seed=7,shared").unwrap()),
        ..PassOptions::default()
    };
    let (out, detail) = Lossy.run_with_detail(graph(), &opts).unwrap();
    kiln_ir::verify(&out).unwrap();
    assert_eq!(count(&out, "prflash_attention"), 1, "{detail}");
    assert_eq!(count(&out, "flash_attention"), 1);
    let pr = out
        .node_ids()
        .find_map(|n| match &out.node(n).op {
            Op::PrFlash(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (pr.block, pr.c.0, pr.seed, pr.per_head),
        (32, 2.0, 7, false)
    );
    assert_eq!(pr.offset, Dim::from("past"));
    assert!(
        detail.contains("1 attention(s) made block-sparse, 1 left exact"),
        "{detail}"
    );
}

#[test]
fn the_option_parser_has_defaults_and_names_bad_parts() {
    assert_eq!(
        PrFlashConfig::parse("prflash").unwrap(),
        PrFlashConfig::default()
    );
    let c = PrFlashConfig::parse("prflash:c=8").unwrap();
    assert_eq!((c.c, c.block), (8.0, 64));
    for (bad, says) in [
        ("flash", "expected `exact` or `prflash"),
        ("prflash:block=0", "block size"),
        ("prflash:c=-1", "c must be"),
        ("prflash:seed=x", "seed"),
        ("prflash:speed=2", "unknown option"),
    ] {
        let e = PrFlashConfig::parse(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    // The text form parses back to the same options.
    for text in [
        "prflash:block=32,c=2.5,seed=7,shared",
        "prflash:block=64,c=4,seed=0",
    ] {
        let c = PrFlashConfig::parse(text).unwrap();
        assert_eq!(c.to_string(), text);
        assert_eq!(PrFlashConfig::parse(&c.to_string()).unwrap(), c);
    }
}
