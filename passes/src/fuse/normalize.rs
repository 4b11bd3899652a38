//! Puts reductions in the form row kernels need: reduced axes trailing.
//!
//! `reduce(x, axes)` over non-trailing axes becomes
//! `reduce(permute(x, kept ++ axes), trailing axes, keep_dims=false)`, which
//! has the same elements in the same row-major order (the kept axes keep
//! their relative order); with `keep_dims=true` a reshape re-inserts the unit
//! axes (a zero-copy view when it ends up at the top level).

use kiln_ir::{Graph, GraphError, Op, Value};

/// Rewrites every non-trailing reduction of `g`; returns how many.
pub fn trailing_reductions(g: &mut Graph) -> Result<usize, GraphError> {
    let mut count = 0;
    for n in g.topo_order() {
        let Op::Reduce {
            op,
            axes,
            keep_dims,
        } = g.node(n).op.clone()
        else {
            continue;
        };
        let x = g.operands(n)[0];
        let rank = g.ty(x).rank();
        let mut sorted = axes.clone();
        sorted.sort_unstable();
        let r = rank - axes.len();
        if sorted == (r..rank).collect::<Vec<_>>() {
            continue;
        }
        let mut perm: Vec<usize> = (0..rank).filter(|a| !sorted.contains(a)).collect();
        perm.extend(sorted.iter().copied());
        let loc = g.node(n).loc.clone();
        let p = g.add(Op::Permute { perm }, &[x])?;
        g.set_loc(p.node, loc.clone());
        let red = g.add(
            Op::Reduce {
                op,
                axes: (r..rank).collect(),
                keep_dims: false,
            },
            &[p],
        )?;
        g.set_loc(red.node, loc.clone());
        let result = if keep_dims {
            let shape = g.node(n).outputs[0].shape.clone();
            let v = g.add(Op::Reshape { shape }, &[red])?;
            g.set_loc(v.node, loc);
            v
        } else {
            red
        };
        g.replace_uses(Value::new(n, 0), result)?;
        count += 1;
    }
    if count > 0 {
        g.remove_dead();
    }
    Ok(count)
}
