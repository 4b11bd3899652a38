//! Layer scopes in source locations, and renaming a layer's index in every
//! name a graph holds (parameter names, locations, nested bodies).

use kiln_ir::{Graph, GraphError, NodeId, Op, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The index a layer's names are abstracted to.
pub const PLACEHOLDER: &str = "{layer}";

/// The repeated scope of a location: the segments before the first numeric
/// segment, and that segment (`model.layers.3.mlp` -> `model.layers`, `3`).
pub fn scope_of(loc: &str) -> Option<(&str, &str)> {
    let mut pos = 0;
    for seg in loc.split('.') {
        if pos > 1 && !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            return Some((&loc[..pos - 1], seg));
        }
        pos += seg.len() + 1;
    }
    None
}

/// A renaming of one scope (`model.layers.3`) to another
/// (`model.layers.{layer}`): only whole dotted segments match, so
/// `model.layers.3` never touches `model.layers.31`.
#[derive(Clone, Debug)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

impl Rename {
    /// `s` renamed, or `None` when it does not contain the scope.
    pub fn apply(&self, s: &str) -> Option<String> {
        let f = self.from.as_str();
        if f.is_empty() || !s.contains(f) {
            return None;
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        let mut changed = false;
        let mut at_start = true;
        while let Some(i) = rest.find(f) {
            let before_ok = if i == 0 {
                at_start
            } else {
                rest.as_bytes()[i - 1] == b'.'
            };
            let after = &rest[i + f.len()..];
            let after_ok = after.is_empty() || after.starts_with('.');
            if before_ok && after_ok {
                out.push_str(&rest[..i]);
                out.push_str(&self.to);
                changed = true;
            } else {
                out.push_str(&rest[..i + f.len()]);
            }
            at_start = false;
            rest = after;
        }
        out.push_str(rest);
        changed.then_some(out)
    }

    fn string(&self, s: &str) -> String {
        self.apply(s).unwrap_or_else(|| s.to_string())
    }

    /// The op with its names renamed (`None`: unchanged). Fails when
    /// renaming makes two names of a body collide.
    pub fn op(&self, op: &Op) -> Result<Option<Op>, GraphError> {
        Ok(match op {
            Op::Param { name, ty } => self.apply(name).map(|name| Op::Param {
                name,
                ty: ty.clone(),
            }),
            Op::Scan(s) => self.graph(&s.body)?.map(|body| {
                let mut s = s.clone();
                s.body = Arc::new(body);
                Op::Scan(s)
            }),
            Op::Fused(f) => self.graph(&f.body)?.map(|body| {
                let mut f = f.clone();
                f.body = Arc::new(body);
                Op::Fused(f)
            }),
            _ => None,
        })
    }

    /// The graph with every name renamed (`None`: nothing to rename).
    pub fn graph(&self, g: &Graph) -> Result<Option<Graph>, GraphError> {
        if !self.touches(g) {
            return Ok(None);
        }
        let mut out = Graph::new(self.string(&g.name));
        let mut map: HashMap<NodeId, NodeId> = HashMap::new();
        for n in g.topo_order() {
            let node = g.node(n);
            let id = match &node.op {
                Op::Input { name, ty } => out.add_input(self.string(name), ty.clone())?.node,
                op => {
                    let operands: Vec<Value> = g
                        .operands(n)
                        .into_iter()
                        .map(|v| Value::new(map[&v.node], v.port))
                        .collect();
                    let op = self.op(op)?.unwrap_or_else(|| op.clone());
                    out.add_node(op, &operands)?
                }
            };
            out.set_loc(id, node.loc.as_deref().map(|l| self.string(l)));
            map.insert(n, id);
        }
        for o in g.outputs() {
            let v = Value::new(map[&o.value.node], o.value.port);
            let name = self.string(&o.name);
            match &o.alias {
                Some(a) => out.add_output_alias(name, v, self.string(a))?,
                None => out.add_output(name, v)?,
            }
        }
        Ok(Some(out))
    }

    /// True when some name in `g` (recursively) contains the scope.
    pub fn touches(&self, g: &Graph) -> bool {
        let hit = |s: &str| self.apply(s).is_some();
        hit(&g.name)
            || g.outputs()
                .iter()
                .any(|o| hit(&o.name) || o.alias.as_deref().is_some_and(hit))
            || g.node_ids().any(|n| {
                let node = g.node(n);
                node.loc.as_deref().is_some_and(hit)
                    || match &node.op {
                        Op::Input { name, .. } | Op::Param { name, .. } => hit(name),
                        op => op.body().is_some_and(|b| self.touches(b)),
                    }
            })
    }
}

/// True when some name in `g` (recursively) contains `text` at all.
pub fn mentions(g: &Graph, text: &str) -> bool {
    let hit = |s: &str| s.contains(text);
    hit(&g.name)
        || g.outputs()
            .iter()
            .any(|o| hit(&o.name) || o.alias.as_deref().is_some_and(hit))
        || g.node_ids().any(|n| {
            let node = g.node(n);
            node.loc.as_deref().is_some_and(hit)
                || match &node.op {
                    Op::Input { name, .. } | Op::Param { name, .. } => hit(name),
                    op => op.body().is_some_and(|b| mentions(b, text)),
                }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_the_first_numeric_segment() {
        assert_eq!(
            scope_of("model.layers.3.self_attn"),
            Some(("model.layers", "3"))
        );
        assert_eq!(scope_of("layers.12"), Some(("layers", "12")));
        assert_eq!(scope_of("rope"), None);
        assert_eq!(scope_of("3.x"), None, "a scope needs a prefix");
        assert_eq!(scope_of("a..3"), Some(("a.", "3")));
        assert_eq!(scope_of("a.3b.c"), None);
    }

    #[test]
    fn renaming_matches_whole_segments_only() {
        let r = Rename {
            from: "model.layers.3".into(),
            to: "model.layers.{layer}".into(),
        };
        assert_eq!(
            r.apply("model.layers.3.mlp.up_proj.weight").as_deref(),
            Some("model.layers.{layer}.mlp.up_proj.weight")
        );
        assert_eq!(r.apply("model.layers.31.mlp"), None);
        assert_eq!(r.apply("xmodel.layers.3.mlp"), None);
        assert_eq!(
            r.apply("a.model.layers.3").as_deref(),
            Some("a.model.layers.{layer}")
        );
        assert_eq!(r.apply("model.layers.30"), None);
    }
}
