//! Partitioning a logical graph into kernels, by op class.
//!
//! Nodes are visited from the outputs backwards (reverse topological order).
//! A fusible node that something outside every kernel still needs — a graph
//! output, a matmul/scan operand, a kernel that does not contain it — roots
//! a new kernel, which then grows over its producers, latest first:
//!
//! - a producer all of whose users are already in the kernel is *owned* by it
//!   (computed once, there);
//! - a producer whose cone holds a transcendental (and no reduction) and
//!   that a member broadcasts stays outside: in the kernel it would be
//!   recomputed for every broadcast copy;
//! - otherwise a *cheap* producer (an element-wise / data-movement chain from
//!   at most one large buffer, no reduction, at most [`DUP_LIMIT`] ops) is
//!   *cloned* into the kernel: recomputing it is cheaper than a round trip
//!   through memory;
//! - otherwise, when every other user is in a kernel formed already, it is
//!   owned and returned as an extra result (multi-output fusion);
//! - otherwise it stays outside and becomes a kernel operand (materialized by
//!   its own kernel later in the walk).
//!
//! A weight cast to `f16`/`bf16` (narrow weight storage) always stays
//! outside: its own kernel reads only the weight, so the runtime computes it
//! once at load, and its readers (an embedding's gather) read the narrow
//! copy instead of converting the f32 weight on every call.
//!
//! A reduction joining a kernel makes it a `row` kernel; every such step is
//! checked against `kiln_ir::kernel::check_fused`, so a producer or consumer
//! that would break the row contract (another row shape, a reshape after the
//! reduction) simply stays outside. Softmax, RMS norm and layer norm thus
//! become one row kernel each, their element-wise prologue and epilogue
//! included; the rest of the element-wise/data-movement ops form maximal
//! `loop` kernels. A needed `reshape` that no kernel absorbs stays at the top
//! level as a zero-copy view; a needed scalar constant stays a constant.
//!
//! Why this order is valid: kernels are formed in reverse topological order
//! of their roots. A kernel reads only buffers and values of kernels rooted
//! before its root, and returns extra results only to kernels formed before
//! it (rooted after). A node is owned by at most one kernel; any other kernel
//! that holds it holds a clone, and clones are made only of cheap nodes whose
//! producers are cheap too — so a kernel that meets a node owned elsewhere
//! can always clone it rather than read it out of order. Emitting each
//! kernel at its root's position in topological order gives a valid graph
//! (and the emitter reports a value that is not ready instead of guessing).

use super::body::build_checked;
use kiln_ir::{Graph, NodeId, Op};
use std::collections::{BinaryHeap, HashMap, HashSet};

/// The largest element-wise cone recomputed in another kernel.
pub const DUP_LIMIT: usize = 8;

/// What a node is to the partitioner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Stays a top-level node and is read from memory: input, param, tensor
    /// constant, matmul, scan, an existing fused kernel.
    Buffer,
    /// A rank-0 constant: copied into every body that uses it.
    ScalarConst,
    /// Element-wise, data movement, iota.
    Fusible,
    /// A reduction: makes its kernel a row kernel.
    Reduce,
}

pub(super) fn role(op: &Op) -> Role {
    match op {
        Op::Const(l) if l.shape.is_empty() => Role::ScalarConst,
        Op::Reduce { .. } => Role::Reduce,
        Op::Iota { .. } => Role::Fusible,
        _ if op.is_elementwise() || op.is_data_movement() => Role::Fusible,
        _ => Role::Buffer,
    }
}

/// One kernel being formed.
pub(super) struct Group {
    pub root: NodeId,
    pub members: HashSet<NodeId>,
    /// Values the kernel returns: the root first, then owned values that
    /// graph outputs or other kernels use.
    pub results: Vec<NodeId>,
    has_reduce: bool,
}

/// The partition of a graph.
pub(super) struct Partition {
    pub order: Vec<NodeId>,
    pub pos: HashMap<NodeId, usize>,
    pub groups: Vec<Group>,
    /// The group that computes and (if needed) returns each owned node.
    pub owner: HashMap<NodeId, usize>,
    /// Reshapes kept at the top level as views.
    pub views: HashSet<NodeId>,
    /// Scalar constants kept at the top level.
    pub top_consts: HashSet<NodeId>,
    /// Nodes cloned into more than one kernel.
    pub cloned: usize,
}

impl Partition {
    /// Members of group `gid` in topological order.
    pub fn sorted_members(&self, gid: usize) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.groups[gid].members.iter().copied().collect();
        v.sort_by_key(|n| self.pos[n]);
        v
    }
}

struct Partitioner<'a> {
    g: &'a Graph,
    p: Partition,
    role: HashMap<NodeId, Role>,
    dup: HashSet<NodeId>,
    /// Fusible nodes whose fusible cone holds a transcendental (or `pow`)
    /// and no reduction.
    computes: HashMap<NodeId, bool>,
    outputs: HashSet<NodeId>,
    users: HashMap<NodeId, Vec<NodeId>>,
    member_of: HashMap<NodeId, Vec<usize>>,
    /// Weights cast narrow: never absorbed into a reader's kernel.
    stored: HashSet<NodeId>,
}

/// Partitions `g` (whose reductions are over trailing axes).
pub(super) fn partition(g: &Graph) -> Partition {
    let order = g.topo_order();
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let role: HashMap<NodeId, Role> = order.iter().map(|&n| (n, role(&g.node(n).op))).collect();
    let mut users: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &n in &order {
        let mut us: Vec<NodeId> = g.users(n).into_iter().map(|u| u.0).collect();
        us.sort_by_key(|u| pos[u]);
        us.dedup();
        users.insert(n, us);
    }
    let dup = duplicable(g, &order, &role);
    let computes = computing(g, &order, &role);
    let outputs = g.outputs().iter().map(|o| o.value.node).collect();
    let stored = order
        .iter()
        .copied()
        .filter(|&n| narrow_weight(g, n))
        .collect();
    let mut pt = Partitioner {
        g,
        p: Partition {
            order: order.clone(),
            pos,
            groups: Vec::new(),
            owner: HashMap::new(),
            views: HashSet::new(),
            top_consts: HashSet::new(),
            cloned: 0,
        },
        role,
        dup,
        computes,
        outputs,
        users,
        member_of: HashMap::new(),
        stored,
    };
    for &n in order.iter().rev() {
        let r = pt.role[&n];
        if r == Role::Buffer || pt.p.owner.contains_key(&n) || !pt.needed(n) {
            continue;
        }
        match (r, &g.node(n).op) {
            (Role::ScalarConst, _) => {
                pt.p.top_consts.insert(n);
            }
            // A view needs its operand in memory: a buffer, or a node no
            // kernel owns yet (it is visited later, and the view makes it
            // needed). An operand already owned inside a kernel would not be
            // returned: then the reshape is a (copy) kernel of its own.
            (_, Op::Reshape { .. })
                if {
                    let o = g.operands(n)[0].node;
                    pt.role[&o] == Role::Buffer || !pt.p.owner.contains_key(&o)
                } =>
            {
                pt.p.views.insert(n);
            }
            _ => pt.grow(n),
        }
    }
    pt.p
}

/// `cast(weight, f16|bf16)` of an f32 weight (`kiln_passes::narrow`).
fn narrow_weight(g: &Graph, n: NodeId) -> bool {
    let Op::Cast(to) = g.node(n).op else {
        return false;
    };
    let from = g.operands(n)[0];
    matches!(to, kiln_ir::DType::F16 | kiln_ir::DType::BF16)
        && g.ty(from).dtype == kiln_ir::DType::F32
        && matches!(g.node(from.node).op, Op::Param { .. })
}

/// Transcendental functions and `pow`: worth computing once rather than per
/// broadcast copy (a multiply is not worth a kernel launch).
fn costly(op: &Op) -> bool {
    use kiln_ir::{BinaryOp, UnaryOp};
    match op {
        Op::Unary(u) => !matches!(
            u,
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Not | UnaryOp::Floor
        ),
        Op::Binary(b) => *b == BinaryOp::Pow,
        _ => false,
    }
}

/// Per node: whether its fusible cone holds a costly op (a transcendental)
/// and no reduction (see `Partitioner::computes`).
fn computing(g: &Graph, order: &[NodeId], role: &HashMap<NodeId, Role>) -> HashMap<NodeId, bool> {
    // Per node: (reduces, computes) over its fusible cone.
    let mut cone: HashMap<NodeId, (bool, bool)> = HashMap::new();
    for &n in order {
        let c = match role[&n] {
            Role::Buffer | Role::ScalarConst => (false, false),
            Role::Reduce => (true, true),
            Role::Fusible => {
                g.operands(n)
                    .iter()
                    .fold((false, costly(&g.node(n).op)), |(r, a), v| {
                        let (r2, a2) = cone[&v.node];
                        (r || r2, a || a2)
                    })
            }
        };
        cone.insert(n, c);
    }
    cone.into_iter().map(|(n, (r, a))| (n, a && !r)).collect()
}

/// Cheap producers: no reduction in their fusible cone, at most `DUP_LIMIT`
/// ops, and at most one large buffer read — recomputing `a + b` in two
/// kernels reads four tensors where materializing it reads three, but
/// recomputing `exp(x)` reads `x` where materializing reads `exp(x)`.
fn duplicable(g: &Graph, order: &[NodeId], role: &HashMap<NodeId, Role>) -> HashSet<NodeId> {
    // Per node: (ops in the cone, large buffers read), counted per path (an
    // overestimate, which is safe); `None` once it is too big or reduces.
    let mut cone: HashMap<NodeId, Option<(usize, usize)>> = HashMap::new();
    for &n in order {
        let c = match role[&n] {
            Role::Buffer => Some((0, 0)),
            Role::ScalarConst => Some((1, 0)),
            Role::Reduce => None,
            Role::Fusible => {
                let out = crate::cost::elems(&g.node(n).outputs[0]);
                g.operands(n)
                    .iter()
                    .try_fold((1usize, 0usize), |(ops, reads), v| {
                        let (o, r) = cone[&v.node]?;
                        let large = role[&v.node] == Role::Buffer
                            && 4.0 * crate::cost::elems(g.ty(*v)) >= out;
                        Some((ops + o, reads + r + usize::from(large)))
                    })
                    .filter(|&(ops, reads)| ops <= DUP_LIMIT && reads <= 1)
            }
        };
        cone.insert(n, c);
    }
    order
        .iter()
        .copied()
        .filter(|n| role[n] != Role::Buffer && cone[n].is_some())
        .collect()
}

impl Partitioner<'_> {
    /// True when something outside the kernels that contain `n` uses it.
    fn needed(&self, n: NodeId) -> bool {
        if self.outputs.contains(&n) {
            return true;
        }
        self.users[&n].iter().any(|u| {
            self.role[u] == Role::Buffer
                || self.p.views.contains(u)
                || self.member_of.get(u).is_some_and(|gs| {
                    gs.iter()
                        .any(|&gid| !self.p.groups[gid].members.contains(&n))
                })
        })
    }

    fn push_producers(&self, heap: &mut BinaryHeap<(usize, NodeId)>, n: NodeId) {
        for v in self.g.operands(n) {
            heap.push((self.p.pos[&v.node], v.node));
        }
    }

    fn grow(&mut self, root: NodeId) {
        let gid = self.p.groups.len();
        self.p.groups.push(Group {
            root,
            members: HashSet::from([root]),
            results: vec![root],
            has_reduce: self.role[&root] == Role::Reduce,
        });
        self.p.owner.insert(root, gid);
        self.member_of.entry(root).or_default().push(gid);
        let mut heap = BinaryHeap::new();
        self.push_producers(&mut heap, root);
        while let Some((_, p)) = heap.pop() {
            if self.p.groups[gid].members.contains(&p) || self.stored.contains(&p) {
                continue;
            }
            match self.role[&p] {
                Role::Buffer => continue,
                Role::ScalarConst => {
                    self.commit(gid, p, false, false);
                    continue;
                }
                Role::Fusible | Role::Reduce => {}
            }
            let cheap = self.dup.contains(&p);
            if self.p.owner.contains_key(&p) {
                // Owned by a kernel rooted later: only a copy keeps the order valid.
                if cheap {
                    self.commit(gid, p, false, false);
                    self.push_producers(&mut heap, p);
                }
                continue;
            }
            // Transcendental work that a member broadcasts would be
            // recomputed for every broadcast copy (`softplus(dt)·x` per state
            // column of Mamba's `[seq, d, N]` input, `exp(A_log)` per step):
            // it is computed once, in a kernel of its own. Values downstream
            // of a reduction are exempt: a row kernel computes them once per row.
            if self.computes[&p] && self.broadcasts(gid, p) {
                continue;
            }
            let group = &self.p.groups[gid];
            let all_in = self.users[&p].iter().all(|u| group.members.contains(u));
            let is_output = self.outputs.contains(&p);
            let added = (all_in && self.try_add(gid, p, true, is_output))
                || (cheap && self.try_add(gid, p, false, false))
                || (self.shareable(gid, p) && self.try_add(gid, p, true, true));
            if added {
                self.push_producers(&mut heap, p);
            }
        }
    }

    /// True when a user of `p` in kernel `gid` has more elements than `p`
    /// (it broadcasts `p`).
    fn broadcasts(&self, gid: usize, p: NodeId) -> bool {
        let group = &self.p.groups[gid];
        let own = crate::cost::elems(&self.g.node(p).outputs[0]);
        self.users[&p].iter().any(|u| {
            group.members.contains(u)
                && self
                    .g
                    .node(*u)
                    .outputs
                    .iter()
                    .any(|t| crate::cost::elems(t) > own)
        })
    }

    /// True when every user of `p` outside kernel `gid` is in a kernel
    /// formed already (so rooted later): the kernel may then compute `p` and
    /// return it as an extra result those kernels read (multi-output fusion,
    /// e.g. a residual sum returned by the norm kernel that consumes it).
    fn shareable(&self, gid: usize, p: NodeId) -> bool {
        let group = &self.p.groups[gid];
        self.users[&p]
            .iter()
            .filter(|u| !group.members.contains(u))
            .all(|u| {
                self.role[u] != Role::Buffer
                    && !self.p.views.contains(u)
                    && self.member_of.get(u).is_some_and(|gs| !gs.is_empty())
            })
    }

    /// Adds `p` if the kernel still satisfies the fusion contract.
    fn try_add(&mut self, gid: usize, p: NodeId, owned: bool, result: bool) -> bool {
        let group = &self.p.groups[gid];
        let reduce = group.has_reduce || self.role[&p] == Role::Reduce;
        // A loop kernel gaining a non-result member cannot break the contract
        // (only result shapes matter there); anything else is checked.
        if reduce || result {
            let mut members: Vec<NodeId> = group.members.iter().copied().chain([p]).collect();
            members.sort_by_key(|n| self.p.pos[n]);
            let mut results = group.results.clone();
            if result {
                results.push(p);
            }
            if build_checked(self.g, "tentative", &members, &results).is_err() {
                return false;
            }
        }
        self.commit(gid, p, owned, result);
        true
    }

    fn commit(&mut self, gid: usize, p: NodeId, owned: bool, result: bool) {
        let group = &mut self.p.groups[gid];
        group.members.insert(p);
        group.has_reduce |= self.role[&p] == Role::Reduce;
        if result {
            group.results.push(p);
        }
        if owned {
            self.p.owner.insert(p, gid);
        }
        let of = self.member_of.entry(p).or_default();
        of.push(gid);
        if of.len() == 2 && self.role[&p] != Role::ScalarConst {
            self.p.cloned += 1;
        }
    }
}
