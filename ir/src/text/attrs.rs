//! Op attributes, shared by every form of the graph: which keys each op has,
//! their values, how they print, and how an op is rebuilt from them. The
//! printer, the text parser, the JSON form and the DOT form all go through
//! this table, so they cannot disagree.

use super::print::format_float;
use crate::attention::{AttentionOp, PrFlashOp};
use crate::graph::Graph;
use crate::op::{BinaryOp, CmpOp, F64Bits, FusedOp, FusionKind, Op, ReduceOp, ScanOp, UnaryOp};
use crate::saq::{SaqAppendOp, SaqAttentionOp, SaqSpec};
use crate::types::{DType, Shape, TensorType};
use crate::Dim;
use std::fmt;
use std::sync::Arc;

/// The kind of value an attribute holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttrKind {
    /// A non-negative integer (axes, counts).
    Int,
    Bool,
    /// A dimension expression (`past+seq`).
    Dim,
    /// A list of non-negative integers (`[0,2,1]`).
    Ints,
    /// A list of dims (`[seq,64]`).
    Shape,
    DType,
    /// A tensor type (`f32[seq,4]`).
    Type,
    /// An `f64` (a pad value).
    Float,
    /// A list of `f64` (`[0.5,0.25]`).
    Floats,
    /// A fusion kind (`loop`, `row`).
    Kind,
}

impl AttrKind {
    /// What a value of this kind looks like, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            AttrKind::Int => "a non-negative integer",
            AttrKind::Bool => "true or false",
            AttrKind::Dim => "a dimension such as 4, seq or past+seq",
            AttrKind::Ints => "a list of non-negative integers such as [0,2,1]",
            AttrKind::Shape => "a shape such as [seq,64]",
            AttrKind::DType => "a dtype such as f32",
            AttrKind::Type => "a tensor type such as f32[seq,4]",
            AttrKind::Float => "a number, inf, -inf or nan",
            AttrKind::Floats => "a list of numbers such as [0.5,0.25]",
            AttrKind::Kind => "a fusion kind (loop or row)",
        }
    }
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AttrValue {
    Int(usize),
    Bool(bool),
    Dim(Dim),
    Ints(Vec<usize>),
    Shape(Shape),
    DType(DType),
    Type(TensorType),
    Float(f64),
    Floats(Vec<f64>),
    Kind(FusionKind),
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(|x| x.to_string()).collect();
    format!("[{}]", v.join(","))
}

impl fmt::Display for AttrValue {
    /// The text form of the value (what follows `key=`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Int(n) => write!(f, "{n}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Dim(d) => write!(f, "{d}"),
            AttrValue::Ints(v) => f.write_str(&join(v)),
            AttrValue::Shape(s) => f.write_str(&join(s)),
            AttrValue::DType(d) => write!(f, "{d}"),
            AttrValue::Type(t) => write!(f, "{t}"),
            AttrValue::Float(v) => f.write_str(&format_float(DType::I64, *v)),
            AttrValue::Floats(v) => {
                let v: Vec<String> = v.iter().map(|x| format_float(DType::I64, *x)).collect();
                write!(f, "[{}]", v.join(","))
            }
            AttrValue::Kind(k) => f.write_str(k.name()),
        }
    }
}

/// What an op name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpName {
    /// `input`: only in a graph's signature.
    Input,
    /// `param "name"`.
    Param,
    /// `const <literal>`.
    Const,
    /// `scan` or `fused`: operands, attributes and a body.
    WithBody,
    /// Every other op: operands and attributes.
    Plain,
}

/// Classifies an op name; `None` when it is not an op.
pub(crate) fn classify(name: &str) -> Option<OpName> {
    Some(match name {
        "input" => OpName::Input,
        "param" => OpName::Param,
        "const" => OpName::Const,
        "scan" | "fused" => OpName::WithBody,
        "iota" | "select" | "cast" | "reshape" | "permute" | "broadcast" | "slice" | "concat"
        | "pad" | "gather" | "matmul" | "matmul_t" | "update_slice" | "flash_attention"
        | "prflash_attention" | "saq_append" | "saq_attention" | "linear_scan" => OpName::Plain,
        _ if UnaryOp::from_name(name).is_some()
            || BinaryOp::from_name(name).is_some()
            || CmpOp::from_name(name).is_some()
            || ReduceOp::from_name(name).is_some() =>
        {
            OpName::Plain
        }
        _ => return None,
    })
}

use AttrKind as K;

/// The attribute keys of an op, in print order (empty for ops with none).
pub(crate) fn spec(name: &str) -> &'static [(&'static str, AttrKind)] {
    match name {
        "iota" => &[("axis", K::Int), ("type", K::Type)],
        "cast" => &[("to", K::DType)],
        "reshape" | "broadcast" => &[("shape", K::Shape)],
        "permute" => &[("perm", K::Ints)],
        "slice" => &[("axis", K::Int), ("start", K::Dim), ("end", K::Dim)],
        "update_slice" => &[("axis", K::Int), ("start", K::Dim)],
        "concat" | "gather" => &[("axis", K::Int)],
        "pad" => &[
            ("axis", K::Int),
            ("low", K::Dim),
            ("high", K::Dim),
            ("value", K::Float),
        ],
        "scan" => &[
            ("num_carry", K::Int),
            ("num_xs", K::Int),
            ("axis", K::Int),
            ("reverse", K::Bool),
        ],
        "fused" => &[("kind", K::Kind)],
        "flash_attention" => &[
            ("scale", K::Float),
            ("causal", K::Bool),
            ("offset", K::Dim),
            ("bias", K::Bool),
            ("slopes", K::Floats),
            ("kv_len", K::Dim),
        ],
        "prflash_attention" => &[
            ("scale", K::Float),
            ("offset", K::Dim),
            ("block", K::Int),
            ("c", K::Float),
            ("seed", K::Int),
            ("per_head", K::Bool),
        ],
        "saq_append" => &[
            ("ladder", K::Ints),
            ("chunk", K::Int),
            ("group", K::Int),
            ("start", K::Dim),
        ],
        "saq_attention" => &[
            ("ladder", K::Ints),
            ("chunk", K::Int),
            ("group", K::Int),
            ("scale", K::Float),
            ("offset", K::Dim),
        ],
        "linear_scan" => &[("reverse", K::Bool), ("chunk", K::Int)],
        _ if ReduceOp::from_name(name).is_some() => &[("axes", K::Ints), ("keep_dims", K::Bool)],
        _ => &[],
    }
}

/// The attributes of `op`, in the order of [`spec`].
pub(crate) fn op_attrs(op: &Op) -> Vec<(&'static str, AttrValue)> {
    use AttrValue as V;
    match op {
        Op::Iota { ty, axis } => vec![("axis", V::Int(*axis)), ("type", V::Type(ty.clone()))],
        Op::Cast(to) => vec![("to", V::DType(*to))],
        Op::Reduce {
            axes, keep_dims, ..
        } => vec![
            ("axes", V::Ints(axes.clone())),
            ("keep_dims", V::Bool(*keep_dims)),
        ],
        Op::Reshape { shape } | Op::Broadcast { shape } => vec![("shape", V::Shape(shape.clone()))],
        Op::Permute { perm } => vec![("perm", V::Ints(perm.clone()))],
        Op::Slice { axis, start, end } => vec![
            ("axis", V::Int(*axis)),
            ("start", V::Dim(start.clone())),
            ("end", V::Dim(end.clone())),
        ],
        Op::Concat { axis } | Op::Gather { axis } => vec![("axis", V::Int(*axis))],
        Op::UpdateSlice { axis, start } => {
            vec![("axis", V::Int(*axis)), ("start", V::Dim(start.clone()))]
        }
        Op::Pad {
            axis,
            low,
            high,
            value,
        } => vec![
            ("axis", V::Int(*axis)),
            ("low", V::Dim(low.clone())),
            ("high", V::Dim(high.clone())),
            ("value", V::Float(value.0)),
        ],
        Op::Scan(s) => vec![
            ("num_carry", V::Int(s.num_carry)),
            ("num_xs", V::Int(s.num_xs)),
            ("axis", V::Int(s.axis)),
            ("reverse", V::Bool(s.reverse)),
        ],
        Op::Fused(f) => vec![("kind", V::Kind(f.kind))],
        Op::Attention(a) => {
            let mut v = vec![
                ("scale", V::Float(a.scale.0)),
                ("causal", V::Bool(a.causal)),
                ("offset", V::Dim(a.offset.clone())),
                ("bias", V::Bool(a.bias)),
                ("slopes", V::Floats(a.slopes.iter().map(|s| s.0).collect())),
            ];
            // Only token-major attention has it (head-major texts stay as they were).
            v.extend(a.kv_len.as_ref().map(|l| ("kv_len", V::Dim(l.clone()))));
            v
        }
        Op::PrFlash(a) => vec![
            ("scale", V::Float(a.scale.0)),
            ("offset", V::Dim(a.offset.clone())),
            ("block", V::Int(a.block)),
            ("c", V::Float(a.c.0)),
            ("seed", V::Int(a.seed as usize)),
            ("per_head", V::Bool(a.per_head)),
        ],
        Op::SaqAppend(a) => {
            let mut v = saq_attrs(&a.spec);
            v.push(("start", V::Dim(a.start.clone())));
            v
        }
        Op::SaqAttention(a) => {
            let mut v = saq_attrs(&a.spec);
            v.push(("scale", V::Float(a.scale.0)));
            v.push(("offset", V::Dim(a.offset.clone())));
            v
        }
        Op::LinearScan(l) => vec![("reverse", V::Bool(l.reverse)), ("chunk", V::Int(l.chunk))],
        _ => vec![],
    }
}

/// The SAQ spec as the `ladder`, `chunk` and `group` attributes.
fn saq_attrs(s: &SaqSpec) -> Vec<(&'static str, AttrValue)> {
    vec![
        (
            "ladder",
            AttrValue::Ints(s.ladder.iter().map(|&b| b as usize).collect()),
        ),
        ("chunk", AttrValue::Int(s.chunk)),
        ("group", AttrValue::Int(s.group)),
    ]
}

/// Attribute values by key, as read from some form; [`build_op`] takes them out.
pub(crate) struct Attrs {
    op: String,
    values: Vec<(&'static str, AttrValue)>,
}

impl Attrs {
    pub fn new(op: &str, values: Vec<(&'static str, AttrValue)>) -> Attrs {
        Attrs {
            op: op.to_string(),
            values,
        }
    }

    fn take(&mut self, key: &str) -> Result<AttrValue, String> {
        match self.values.iter().position(|(k, _)| *k == key) {
            Some(i) => Ok(self.values.swap_remove(i).1),
            None => Err(format!("missing attribute \"{key}\" for {}", self.op)),
        }
    }
    fn int(&mut self, key: &str) -> Result<usize, String> {
        match self.take(key)? {
            AttrValue::Int(v) => Ok(v),
            _ => Err(self.wrong(key)),
        }
    }
    fn bool(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key)? {
            AttrValue::Bool(v) => Ok(v),
            _ => Err(self.wrong(key)),
        }
    }
    fn dim(&mut self, key: &str) -> Result<Dim, String> {
        match self.take(key)? {
            AttrValue::Dim(v) => Ok(v),
            _ => Err(self.wrong(key)),
        }
    }
    /// An attribute that may be left out (`None`).
    fn optional_dim(&mut self, key: &str) -> Result<Option<Dim>, String> {
        if !self.values.iter().any(|(k, _)| *k == key) {
            return Ok(None);
        }
        self.dim(key).map(Some)
    }
    fn ints(&mut self, key: &str) -> Result<Vec<usize>, String> {
        match self.take(key)? {
            AttrValue::Ints(v) => Ok(v),
            _ => Err(self.wrong(key)),
        }
    }
    fn shape(&mut self, key: &str) -> Result<Shape, String> {
        match self.take(key)? {
            AttrValue::Shape(v) => Ok(v),
            _ => Err(self.wrong(key)),
        }
    }
    fn float(&mut self, key: &str) -> Result<F64Bits, String> {
        match self.take(key)? {
            AttrValue::Float(v) => Ok(F64Bits(v)),
            _ => Err(self.wrong(key)),
        }
    }
    fn floats(&mut self, key: &str) -> Result<Vec<F64Bits>, String> {
        match self.take(key)? {
            AttrValue::Floats(v) => Ok(v.into_iter().map(F64Bits).collect()),
            _ => Err(self.wrong(key)),
        }
    }
    fn saq_spec(&mut self) -> Result<SaqSpec, String> {
        let ladder = self
            .ints("ladder")?
            .into_iter()
            .map(|b| u32::try_from(b).map_err(|_| format!("ladder width {b} is too large")))
            .collect::<Result<_, _>>()?;
        let spec = SaqSpec {
            ladder,
            chunk: self.int("chunk")?,
            group: self.int("group")?,
        };
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }
    fn wrong(&self, key: &str) -> String {
        format!(
            "attribute \"{key}\" of {} has the wrong kind of value",
            self.op
        )
    }
}

/// Rebuilds an op that is not a leaf with a payload (`input`, `param`,
/// `const`) from its name, attributes and body. Errors name the problem.
pub(crate) fn build_op(name: &str, mut a: Attrs, body: Option<Graph>) -> Result<Op, String> {
    let op = if let Some(u) = UnaryOp::from_name(name) {
        Op::Unary(u)
    } else if let Some(b) = BinaryOp::from_name(name) {
        Op::Binary(b)
    } else if let Some(c) = CmpOp::from_name(name) {
        Op::Compare(c)
    } else if let Some(r) = ReduceOp::from_name(name) {
        Op::Reduce {
            op: r,
            axes: a.ints("axes")?,
            keep_dims: a.bool("keep_dims")?,
        }
    } else {
        match name {
            "iota" => {
                let axis = a.int("axis")?;
                match a.take("type")? {
                    AttrValue::Type(ty) => Op::Iota { ty, axis },
                    _ => return Err(a.wrong("type")),
                }
            }
            "select" => Op::Select,
            "matmul" => Op::MatMul,
            "matmul_t" => Op::MatMulT,
            "cast" => match a.take("to")? {
                AttrValue::DType(d) => Op::Cast(d),
                _ => return Err(a.wrong("to")),
            },
            "reshape" => Op::Reshape {
                shape: a.shape("shape")?,
            },
            "broadcast" => Op::Broadcast {
                shape: a.shape("shape")?,
            },
            "permute" => Op::Permute {
                perm: a.ints("perm")?,
            },
            "update_slice" => Op::UpdateSlice {
                axis: a.int("axis")?,
                start: a.dim("start")?,
            },
            "slice" => Op::Slice {
                axis: a.int("axis")?,
                start: a.dim("start")?,
                end: a.dim("end")?,
            },
            "concat" => Op::Concat {
                axis: a.int("axis")?,
            },
            "gather" => Op::Gather {
                axis: a.int("axis")?,
            },
            "pad" => {
                let axis = a.int("axis")?;
                let low = a.dim("low")?;
                let high = a.dim("high")?;
                match a.take("value")? {
                    AttrValue::Float(v) => Op::Pad {
                        axis,
                        low,
                        high,
                        value: F64Bits(v),
                    },
                    _ => return Err(a.wrong("value")),
                }
            }
            "flash_attention" => Op::Attention(AttentionOp {
                scale: a.float("scale")?,
                causal: a.bool("causal")?,
                offset: a.dim("offset")?,
                bias: a.bool("bias")?,
                slopes: a.floats("slopes")?,
                kv_len: a.optional_dim("kv_len")?,
            }),
            "prflash_attention" => Op::PrFlash(PrFlashOp {
                scale: a.float("scale")?,
                offset: a.dim("offset")?,
                block: a.int("block")?,
                c: a.float("c")?,
                seed: a.int("seed")? as u64,
                per_head: a.bool("per_head")?,
            }),
            "saq_append" => Op::SaqAppend(SaqAppendOp {
                spec: a.saq_spec()?,
                start: a.dim("start")?,
            }),
            "saq_attention" => Op::SaqAttention(SaqAttentionOp {
                spec: a.saq_spec()?,
                scale: a.float("scale")?,
                offset: a.dim("offset")?,
            }),
            "linear_scan" => Op::LinearScan(crate::linear_scan::LinearScanOp {
                reverse: a.bool("reverse")?,
                chunk: a.int("chunk")?,
            }),
            "scan" => Op::Scan(ScanOp {
                num_carry: a.int("num_carry")?,
                num_xs: a.int("num_xs")?,
                axis: a.int("axis")?,
                reverse: a.bool("reverse")?,
                body: Arc::new(body.ok_or("scan needs a body")?),
            }),
            "fused" => match a.take("kind")? {
                AttrValue::Kind(kind) => Op::Fused(FusedOp {
                    kind,
                    body: Arc::new(body.ok_or("fused needs a body")?),
                }),
                _ => return Err(a.wrong("kind")),
            },
            _ => return Err(format!("unknown op \"{name}\"")),
        }
    };
    if let Some((k, _)) = a.values.first() {
        return Err(format!("unknown attribute \"{k}\" for {name}"));
    }
    Ok(op)
}
