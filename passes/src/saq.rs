//! `saq`: the opt-in SAQ quantized KV cache (DESIGN.md §4), requested with
//! [`PassOptions::kv_cache`] (`kiln --kv-cache saq:16,8,4,2:S=128:G=32`).
//! Lossy, so never an e-graph rule: an explicit rewrite that does nothing
//! unless asked, and fails with an error naming the problem when asked for
//! a graph without a cache it recognizes.
//!
//! What it recognizes (the fixed-capacity cache of Kiln's decoders, after
//! `recognize` has made attention a `flash_attention`):
//!
//! ```text
//! %kc: f32[ctx,H,D]  (input, state)     %vc: likewise
//! k_all = update_slice(%kc, k_new) {axis=0, start=past}   output aliasing %kc
//! v_all = update_slice(%vc, v_new) {axis=0, start=past}   output aliasing %vc
//! out   = flash_attention(q, view(k_all), view(v_all)) {causal, offset=past}
//! ```
//!
//! where `view` is any chain of `slice`, `permute` and `reshape` that reads
//! rows `0..past+seq` as `[H, 1, past+seq, D]` (or `[H, past+seq, D]`) —
//! checked by evaluating the chain on an index tensor, so every spelling of
//! the transpose is accepted and nothing else is — and `q` is
//! `[H, g, seq, D]` (or `[H, seq, D]`). It becomes
//!
//! ```text
//! %kv_saq: u8[N(ctx)]  (input, state, replacing %kc and %vc)
//! s   = saq_append(%kv_saq, k_new, v_new) {start=past}      output aliasing %kv_saq
//! out = saq_attention(q, s, k_new, v_new) {scale, offset=past}
//! ```
//!
//! so the new keys and values are quantized into the state and attention
//! reads the quantized chunks directly (`kiln_ir::saq`).

use crate::error::PassError;
use crate::manager::Pass;
use crate::options::PassOptions;
use kiln_ir::interp::{eval_op, EvalOptions};
use kiln_ir::saq::{SaqAppendOp, SaqAttentionOp, SaqLayout, SaqSpec};
use kiln_ir::{Bindings, DType, Dim, Graph, NodeId, Op, Tensor, TensorType, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The `saq` pass.
pub struct Saq;

impl Pass for Saq {
    fn name(&self) -> &'static str {
        "saq"
    }
    fn description(&self) -> &'static str {
        "opt-in SAQ quantized KV cache (--kv-cache saq:...): cache + attention -> saq_append + saq_attention"
    }
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        match &opts.kv_cache {
            None => Ok((graph, "none requested".into())),
            Some(spec) => rewrite(&graph, spec),
        }
    }
}

fn fail(problem: impl Into<String>) -> PassError {
    PassError::Saq {
        problem: problem.into(),
    }
}

/// A cache input updated by an `update_slice` whose result an output
/// returns in its place.
#[derive(Clone, Debug)]
struct Cache {
    name: String,
    input: NodeId,
    update: NodeId,
    start: Dim,
    ty: TensorType,
}

/// A `flash_attention` over a pair of caches.
struct Site {
    node: NodeId,
    k: String,
    v: String,
    /// The view nodes between the caches' updates and the attention.
    views: Vec<NodeId>,
    /// Whether the attention is rank 3 (`[H, T, D]`, no group axis).
    rank3: bool,
}

/// The caches of `g`: inputs whose aliased output is an `update_slice` of
/// them along axis 0.
fn caches(g: &Graph) -> HashMap<NodeId, Cache> {
    let mut out = HashMap::new();
    for o in g.outputs() {
        let Some(alias) = &o.alias else { continue };
        let Some(input) = g.input(alias) else {
            continue;
        };
        let Op::UpdateSlice { axis: 0, start } = &g.node(o.value.node).op else {
            continue;
        };
        if g.operands(o.value.node)[0] != input || o.value.port != 0 {
            continue;
        }
        let ty = g.ty(input).clone();
        out.insert(
            o.value.node,
            Cache {
                name: alias.clone(),
                input: input.node,
                update: o.value.node,
                start: start.clone(),
                ty,
            },
        );
    }
    out
}

/// Follows `v` back through views to a cache update; returns the update
/// node and the view nodes (outermost first).
fn trace(
    g: &Graph,
    mut v: Value,
    updates: &HashMap<NodeId, Cache>,
) -> Option<(NodeId, Vec<NodeId>)> {
    let mut path = Vec::new();
    for _ in 0..64 {
        if updates.contains_key(&v.node) {
            return Some((v.node, path));
        }
        match g.node(v.node).op {
            Op::Reshape { .. } | Op::Permute { .. } | Op::Slice { .. } => {
                path.push(v.node);
                v = g.operands(v.node)[0];
            }
            _ => return None,
        }
    }
    None
}

/// Checks, by evaluating the view chain `path` (outermost first) on an
/// index tensor, that it reads rows `0..past+seq` of a cache `[ctx, H, D]`
/// as `[H, 1, T, D]` (rank 4) or `[H, T, D]` (rank 3). Returns the rank.
fn view_rank(g: &Graph, cache: &Cache, path: &[NodeId], seq: &Dim) -> Result<usize, String> {
    let (h, d) = (cache.ty.shape[1].as_const(), cache.ty.shape[2].as_const());
    let (Some(h), Some(d)) = (h, d) else {
        return Err(format!(
            "cache `{}` {} has symbolic heads or head size",
            cache.name, cache.ty
        ));
    };
    let (h, d) = (h as usize, d as usize);
    let mut rank = 0;
    // Two bindings, so a chain that only happens to agree at one size fails.
    for (ctx, past, n) in [(7usize, 2usize, 3usize), (6, 0, 5)] {
        let mut b: Bindings = BTreeMap::new();
        b.insert("ctx".into(), ctx as i64);
        b.insert("past".into(), past as i64);
        if let Some(s) = seq.as_sym() {
            b.insert(s.into(), n as i64);
        }
        let ctx_dim = cache.ty.shape[0].clone();
        let Some(c) = ctx_dim.eval(&b).ok() else {
            return Err(format!("the capacity {ctx_dim} is not `ctx`"));
        };
        let c = c as usize;
        let total = past + seq.eval(&b).map_err(|e| e.to_string())? as usize;
        if total > c {
            return Err("the test sizes do not fit".into());
        }
        let values: Vec<f64> = (0..c * h * d).map(|i| i as f64).collect();
        let mut x =
            Tensor::from_f64(DType::F32, vec![c, h, d], &values).map_err(|e| e.to_string())?;
        let opts = EvalOptions::default();
        for &n in path.iter().rev() {
            x = eval_op(&g.node(n).op, &[x], &b, &opts)
                .map_err(|e| e.to_string())?
                .remove(0);
        }
        let want3 = vec![h, total, d];
        let want4 = vec![h, 1, total, d];
        rank = if x.shape == want4 {
            4
        } else if x.shape == want3 {
            3
        } else {
            return Err(format!(
                "the view gives shape {:?}, not [{h}, 1, {total}, {d}]",
                x.shape
            ));
        };
        let got = x.to_f64_vec();
        for hh in 0..h {
            for t in 0..total {
                for dd in 0..d {
                    if got[(hh * total + t) * d + dd] != ((t * h + hh) * d + dd) as f64 {
                        return Err(
                            "the view is not the cache's rows transposed to [H, T, D]".into()
                        );
                    }
                }
            }
        }
    }
    Ok(rank)
}

/// The state input's name for a K/V pair.
fn state_name(k: &str, taken: &HashSet<String>) -> String {
    let base = match k.strip_suffix("k_cache") {
        Some(p) => format!("{p}kv_saq"),
        None => format!("{k}.saq"),
    };
    let mut name = base.clone();
    let mut i = 1;
    while taken.contains(&name) {
        name = format!("{base}{i}");
        i += 1;
    }
    name
}

/// Rewrites the caches of `g` read by `flash_attention` into SAQ states.
pub fn rewrite(g: &Graph, spec: &SaqSpec) -> Result<(Graph, String), PassError> {
    spec.validate().map_err(|e| fail(e.to_string()))?;
    let updates = caches(g);
    if updates.is_empty() {
        return Err(fail(
            "the graph has no KV cache: expected an f32 input updated by update_slice along axis 0 and returned as an in-place output",
        ));
    }
    let by_name: HashMap<&str, &Cache> = updates.values().map(|c| (c.name.as_str(), c)).collect();
    // Attention sites over pairs of caches.
    let mut sites = Vec::new();
    let mut problems = Vec::new();
    for n in g.topo_order() {
        let Op::Attention(a) = &g.node(n).op else {
            continue;
        };
        let ops = g.operands(n);
        let (Some((uk, pk)), Some((uv, pv))) =
            (trace(g, ops[1], &updates), trace(g, ops[2], &updates))
        else {
            continue;
        };
        let (ck, cv) = (&updates[&uk], &updates[&uv]);
        let place = format!("flash_attention over `{}` and `{}`", ck.name, cv.name);
        if uk == uv {
            problems.push(format!("{place}: keys and values come from one cache"));
            continue;
        }
        if !a.causal || a.bias || !a.slopes.is_empty() {
            problems.push(format!("{place}: only causal attention without a bias or harmonic slopes reads an SAQ cache"));
            continue;
        }
        if a.kv_len.is_some() {
            problems.push(format!("{place}: it reads the cache token-major (kv_len); SAQ runs before `layout` introduces that"));
            continue;
        }
        if a.offset != ck.start || ck.start != cv.start {
            problems.push(format!(
                "{place}: the causal offset {} is not the caches' fill size {} / {}",
                a.offset, ck.start, cv.start
            ));
            continue;
        }
        let seq = g.ty(g.operands(uk)[1]).shape[0].clone();
        let rk = view_rank(g, ck, &pk, &seq);
        let rv = view_rank(g, cv, &pv, &seq);
        let (rk, rv) = match (rk, rv) {
            (Ok(a), Ok(b)) if a == b => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(format!("{place}: {e}"));
                continue;
            }
            _ => {
                problems.push(format!("{place}: keys and values are viewed differently"));
                continue;
            }
        };
        debug_assert_eq!(rk, rv);
        let q = g.ty(ops[0]);
        if q.rank() != rk {
            problems.push(format!(
                "{place}: queries {q} do not have the keys' rank {rk}"
            ));
            continue;
        }
        let mut views = pk;
        views.extend(pv);
        sites.push(Site {
            node: n,
            k: ck.name.clone(),
            v: cv.name.clone(),
            views,
            rank3: rk == 3,
        });
    }
    if sites.is_empty() {
        let why = if problems.is_empty() {
            "no flash_attention reads the caches (attention must be recognized first: run `saq` after `recognize`)".to_string()
        } else {
            problems.join("; ")
        };
        return Err(fail(format!("no KV cache attention to quantize: {why}")));
    }
    // Pairs (k name -> v name); a cache belongs to one pair.
    let mut pair_of: HashMap<String, String> = HashMap::new();
    for s in &sites {
        for (a, b) in [(&s.k, &s.v), (&s.v, &s.k)] {
            if pair_of.get(a).is_some_and(|o| o != b) {
                return Err(fail(format!(
                    "cache `{a}` is attended with two different partners"
                )));
            }
        }
        pair_of.insert(s.k.clone(), s.v.clone());
        pair_of.insert(s.v.clone(), s.k.clone());
    }
    // Nothing else may read a rewritten cache, its update or the views.
    let site_nodes: HashSet<NodeId> = sites.iter().map(|s| s.node).collect();
    let mut dropped: HashSet<NodeId> = sites.iter().flat_map(|s| s.views.iter().copied()).collect();
    for name in pair_of.keys() {
        let c = by_name[name.as_str()];
        dropped.insert(c.update);
        if g.users(c.input).iter().any(|&(u, _, _)| u != c.update) {
            return Err(fail(format!(
                "cache `{name}` is read by something other than its update"
            )));
        }
    }
    for &n in &dropped {
        for (u, _, _) in g.users(n) {
            if !dropped.contains(&u) && !site_nodes.contains(&u) {
                return Err(fail(format!(
                    "`{}` over a cache feeds `{}`, which is not the attention SAQ replaces",
                    g.node(n).op.name(),
                    g.node(u).op.name()
                )));
            }
        }
    }
    for o in g.outputs() {
        let aliased_cache = o.alias.as_ref().is_some_and(|a| pair_of.contains_key(a));
        if dropped.contains(&o.value.node) && !aliased_cache {
            return Err(fail(format!(
                "output `{}` returns a cache view SAQ replaces",
                o.name
            )));
        }
    }
    rebuild(g, spec, &sites, &pair_of, &by_name)
}

fn rebuild(
    g: &Graph,
    spec: &SaqSpec,
    sites: &[Site],
    pair_of: &HashMap<String, String>,
    by_name: &HashMap<&str, &Cache>,
) -> Result<(Graph, String), PassError> {
    let rb = |source| PassError::Rebuild {
        pass: "saq",
        source,
    };
    let mut out = Graph::new(g.name.clone());
    let mut map: HashMap<Value, Value> = HashMap::new();
    // Pair key: the K cache's name (the cache a site reads keys from).
    let keys: HashSet<&str> = sites.iter().map(|s| s.k.as_str()).collect();
    let mut taken: HashSet<String> = g.input_names().map(String::from).collect();
    let mut states: HashMap<String, (String, Value, SaqLayout)> = HashMap::new();
    let mut report = Vec::new();
    for (&n, (name, ty)) in g.inputs().iter().zip(g.input_names().zip(g.input_types())) {
        if keys.contains(name) {
            let c = by_name[name];
            let (h, d) = (c.ty.shape[1].as_const(), c.ty.shape[2].as_const());
            let layout = SaqLayout::new(spec, h.unwrap_or(0) as usize, d.unwrap_or(0) as usize)
                .map_err(|e| fail(format!("cache `{name}` {}: {e}", c.ty)))?;
            let sname = state_name(name, &taken);
            taken.insert(sname.clone());
            let sty = TensorType::new(DType::U8, vec![layout.state_len(&c.ty.shape[0])]);
            let v = out.add_input(sname.clone(), sty).map_err(rb)?;
            report.push((name.to_string(), pair_of[name].clone(), layout.clone()));
            states.insert(name.to_string(), (sname, v, layout));
        } else if pair_of.contains_key(name) {
            // The V cache of a pair: folded into the K cache's state.
        } else {
            let v = out.add_input(name, ty).map_err(rb)?;
            map.insert(Value::new(n, 0), v);
        }
    }
    let site_at: HashMap<NodeId, &Site> = sites.iter().map(|s| (s.node, s)).collect();
    let dropped: HashSet<NodeId> = sites
        .iter()
        .flat_map(|s| s.views.iter().copied())
        .chain(pair_of.keys().map(|k| by_name[k.as_str()].update))
        .collect();
    let mut appended: HashMap<String, Value> = HashMap::new();
    for n in g.topo_order() {
        let node = g.node(n);
        if matches!(node.op, Op::Input { .. }) || dropped.contains(&n) {
            continue;
        }
        if let Some(site) = site_at.get(&n) {
            let (ck, cv) = (by_name[site.k.as_str()], by_name[site.v.as_str()]);
            let k_new = map[&g.operands(ck.update)[1]];
            let v_new = map[&g.operands(cv.update)[1]];
            let (_, state, _) = &states[&site.k];
            let new_state = match appended.get(&site.k) {
                Some(&s) => s,
                None => {
                    let op = Op::SaqAppend(SaqAppendOp {
                        spec: spec.clone(),
                        start: ck.start.clone(),
                    });
                    let s = out.add(op, &[*state, k_new, v_new]).map_err(rb)?;
                    out.set_loc(s.node, g.node(ck.update).loc.clone());
                    appended.insert(site.k.clone(), s);
                    s
                }
            };
            let Op::Attention(a) = &node.op else {
                unreachable!("sites are attention nodes")
            };
            let mut q = map[&g.operands(n)[0]];
            let qty = out.ty(q).clone();
            if site.rank3 {
                let mut s = qty.shape.clone();
                s.insert(1, Dim::constant(1));
                q = out.add(Op::Reshape { shape: s }, &[q]).map_err(rb)?;
            }
            let op = Op::SaqAttention(SaqAttentionOp {
                spec: spec.clone(),
                scale: a.scale,
                offset: ck.start.clone(),
            });
            let mut r = out.add(op, &[q, new_state, k_new, v_new]).map_err(rb)?;
            out.set_loc(r.node, node.loc.clone());
            if site.rank3 {
                r = out
                    .add(Op::Reshape { shape: qty.shape }, &[r])
                    .map_err(rb)?;
            }
            map.insert(Value::new(n, 0), r);
            continue;
        }
        let operands: Vec<Value> = g.operands(n).iter().map(|v| map[v]).collect();
        let id = out.add_node(node.op.clone(), &operands).map_err(rb)?;
        out.set_loc(id, node.loc.clone());
        for port in 0..node.outputs.len() {
            map.insert(Value::new(n, port as u32), Value::new(id, port as u32));
        }
    }
    for o in g.outputs() {
        match o.alias.as_deref() {
            Some(a) if states.contains_key(a) => {
                let (sname, _, _) = &states[a];
                let v = appended[a];
                out.add_output_alias(sname.clone(), v, sname.clone())
                    .map_err(rb)?;
            }
            Some(a) if pair_of.contains_key(a) => {}
            Some(a) => out
                .add_output_alias(o.name.clone(), map[&o.value], a)
                .map_err(rb)?,
            None => out.add_output(o.name.clone(), map[&o.value]).map_err(rb)?,
        }
    }
    let detail = describe(spec, &report, sites.len());
    Ok((out, detail))
}

/// The pass report: what was rewritten and the state's size at 4096 tokens.
fn describe(spec: &SaqSpec, report: &[(String, String, SaqLayout)], sites: usize) -> String {
    let (mut saq, mut f16) = (0usize, 0usize);
    for (_, _, l) in report {
        saq += l.state_bytes(4096);
        f16 += l.f16_bytes(4096);
    }
    let first = report
        .first()
        .map(|(k, v, _)| format!(" (e.g. `{k}` + `{v}`)"))
        .unwrap_or_default();
    format!(
        "{spec}: {} K/V cache pair(s){first} -> u8 states, {sites} attention(s) read them; at 4096 tokens {saq} state bytes vs {f16} as f16 ({:.2}x smaller)",
        report.len(),
        f16 as f64 / saq.max(1) as f64
    )
}
