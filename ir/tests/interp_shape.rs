//! Data movement and index ops against index formulas, with symbolic sizes
//! bound at several values: reshape, permute, broadcast, slice, concat, pad,
//! gather, iota, const.

mod interp_common;
use interp_common::*;

use kiln_ir::interp::round_f16;
use kiln_ir::op::F64Bits;
use kiln_ir::{DType, Dim, Literal, Op, Tensor, TensorData};

#[test]
fn reshape_keeps_row_major_order_for_symbolic_sizes() {
    let mut r = rng(20);
    let mut b = B::new("rs");
    let x = b.input("x", f32t(&["4*seq"]));
    let y = b.reshape(x, &["seq", "2", "2"]);
    b.out("y", y);
    for seq in [1usize, 2, 5] {
        let (t, v) = rand_f32(&mut r, &[4 * seq], -1.0, 1.0);
        let got = run(&b.g, vec![("x", t)]);
        assert_eq!(got.shape, vec![seq, 2, 2]);
        assert_eq!(got.to_f64_vec(), v);
    }
}

#[test]
fn permute_moves_axes_as_the_index_formula_says() {
    let mut r = rng(21);
    for perm in [[2usize, 0, 1], [1, 0, 2], [0, 2, 1], [2, 1, 0]] {
        let mut b = B::new("pm");
        let x = b.input("x", f32t(&["a", "3", "4"]));
        let y = b.permute(x, &perm);
        b.out("y", y);
        for a in [1usize, 2, 3] {
            let shape = [a, 3, 4];
            let (t, v) = rand_f32(&mut r, &shape, -1.0, 1.0);
            let got = run(&b.g, vec![("x", t)]);
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            assert_eq!(got.shape, out_shape);
            let got = got.to_f64_vec();
            for (i, g) in got.iter().enumerate() {
                let oi = unravel(i, &out_shape);
                let mut ii = [0usize; 3];
                for (ax, &p) in perm.iter().enumerate() {
                    ii[p] = oi[ax];
                }
                assert_eq!(*g, v[ravel(&ii, &shape)], "perm {perm:?} at {oi:?}");
            }
        }
    }
}

#[test]
fn broadcast_repeats_along_size_one_and_new_axes() {
    let mut r = rng(22);
    let mut b = B::new("bc");
    let x = b.input("x", f32t(&["n", "1"]));
    let y = b.broadcast(x, &["2", "n", "m"]);
    // `m` comes from a second input.
    let z = b.input("z", f32t(&["m"]));
    b.out("y", y);
    b.out("z", z);
    for (n, m) in [(1usize, 1usize), (3, 4), (2, 0)] {
        let (t, v) = rand_f32(&mut r, &[n, 1], -1.0, 1.0);
        let zt = f32_tensor(&[m], &vec![0.0; m]);
        let got = run_out(
            &b.g,
            vec![("x", t), ("z", zt)],
            &no_params(),
            Default::default(),
            "y",
        );
        assert_eq!(got.shape, vec![2, n, m]);
        for (i, g) in got.to_f64_vec().iter().enumerate() {
            let idx = unravel(i, &[2, n, m]);
            assert_eq!(*g, bcast_get(&v, &[n, 1], &idx));
        }
    }
}

#[test]
fn slice_with_symbolic_bounds_takes_the_new_rows() {
    let mut r = rng(23);
    let mut b = B::new("sl");
    let x = b.input("x", f32t(&["past+seq", "3"]));
    let k = b.input("k", f32t(&["past"]));
    let y = b.op(
        Op::Slice {
            axis: 0,
            start: Dim::from("past"),
            end: Dim::from("past+seq"),
        },
        &[x],
    );
    b.out("y", y);
    b.out("k", k);
    for (past, seq) in [(0usize, 2usize), (3, 1), (4, 4), (2, 0)] {
        let (t, v) = rand_f32(&mut r, &[past + seq, 3], -1.0, 1.0);
        let kt = f32_tensor(&[past], &vec![0.0; past]);
        let got = run_out(
            &b.g,
            vec![("x", t), ("k", kt)],
            &no_params(),
            Default::default(),
            "y",
        );
        assert_eq!(got.shape, vec![seq, 3]);
        assert_eq!(got.to_f64_vec(), v[past * 3..].to_vec());
    }
    // A slice along an inner axis.
    let mut b = B::new("sl2");
    let x = b.input("x", f32t(&["2", "5", "2"]));
    let y = b.op(
        Op::Slice {
            axis: 1,
            start: Dim::from(1),
            end: Dim::from(4),
        },
        &[x],
    );
    b.out("y", y);
    let (t, v) = rand_f32(&mut r, &[2, 5, 2], -1.0, 1.0);
    let got = run(&b.g, vec![("x", t)]);
    assert_eq!(got.shape, vec![2, 3, 2]);
    for (i, g) in got.to_f64_vec().iter().enumerate() {
        let o = unravel(i, &[2, 3, 2]);
        assert_eq!(*g, v[ravel(&[o[0], o[1] + 1, o[2]], &[2, 5, 2])]);
    }
}

#[test]
fn concat_joins_in_order_including_empty_parts() {
    let mut r = rng(24);
    let mut b = B::new("cc");
    let x = b.input("a", f32t(&["2", "1", "3"]));
    let y = b.input("b", f32t(&["2", "n", "3"]));
    let z = b.input("c", f32t(&["2", "m", "3"]));
    let w = b.op(Op::Concat { axis: 1 }, &[x, y, z]);
    b.out("y", w);
    for (n, m) in [(4usize, 0usize), (0, 2), (2, 3)] {
        let (ta, va) = rand_f32(&mut r, &[2, 1, 3], -1.0, 1.0);
        let (tb, vb) = rand_f32(&mut r, &[2, n, 3], -1.0, 1.0);
        let (tc, vc) = rand_f32(&mut r, &[2, m, 3], -1.0, 1.0);
        let got = run(&b.g, vec![("a", ta), ("b", tb), ("c", tc)]);
        let total = 1 + n + m;
        assert_eq!(got.shape, vec![2, total, 3]);
        for (i, g) in got.to_f64_vec().iter().enumerate() {
            let [o, j, k] = unravel(i, &[2, total, 3])[..] else {
                unreachable!()
            };
            let want = if j < 1 {
                va[ravel(&[o, j, k], &[2, 1, 3])]
            } else if j < 1 + n {
                vb[ravel(&[o, j - 1, k], &[2, n, 3])]
            } else {
                vc[ravel(&[o, j - 1 - n, k], &[2, m, 3])]
            };
            assert_eq!(*g, want);
        }
    }
}

#[test]
fn pad_fills_before_and_after_with_the_value_converted_to_the_dtype() {
    let mut r = rng(25);
    let mut b = B::new("pd");
    let x = b.input("x", f32t(&["2", "3"]));
    let n = b.input("n", f32t(&["h"]));
    let y = b.pad(x, 1, "1", "h", -7.5);
    b.out("y", y);
    b.out("n", n);
    for h in [0usize, 2] {
        let (t, v) = rand_f32(&mut r, &[2, 3], -1.0, 1.0);
        let nt = f32_tensor(&[h], &vec![0.0; h]);
        let got = run_out(
            &b.g,
            vec![("x", t), ("n", nt)],
            &no_params(),
            Default::default(),
            "y",
        );
        let w = 1 + 3 + h;
        assert_eq!(got.shape, vec![2, w]);
        for (i, g) in got.to_f64_vec().iter().enumerate() {
            let (row, col) = (i / w, i % w);
            let want = if (1..4).contains(&col) {
                v[row * 3 + col - 1]
            } else {
                -7.5
            };
            assert_eq!(*g, want);
        }
    }
    // The fill value is converted like a cast: saturated into u8, rounded into f16.
    for (dtype, value, want) in [
        (DType::U8, 300.0, 255.0),
        (DType::F16, 0.1, round_f16(0.1).to_f64()),
    ] {
        let mut b = B::new("pd2");
        let x = b.input("x", ty(dtype, &["1"]));
        let y = b.pad(x, 0, "2", "0", value);
        b.out("y", y);
        let got = run(
            &b.g,
            vec![("x", Tensor::from_f64(dtype, vec![1], &[1.0]).unwrap())],
        );
        assert_eq!(got.to_f64_vec(), vec![want, want, 1.0], "{dtype}");
    }
}

#[test]
fn gather_picks_rows_along_any_axis() {
    let mut r = rng(26);
    // Embedding lookup: table [vocab, d], ids [batch, seq] (i32).
    let mut b = B::new("emb");
    let tbl = b.input("table", f32t(&["5", "3"]));
    let ids = b.input("ids", ty(DType::I32, &["2", "seq"]));
    let y = b.op(Op::Gather { axis: 0 }, &[tbl, ids]);
    b.out("y", y);
    for seq in [1usize, 4] {
        let (t, v) = rand_f32(&mut r, &[5, 3], -1.0, 1.0);
        let idv: Vec<i32> = (0..2 * seq).map(|i| ((i * 3 + 1) % 5) as i32).collect();
        let got = run(
            &b.g,
            vec![
                ("table", t),
                ("ids", Tensor::i32(vec![2, seq], idv.clone()).unwrap()),
            ],
        );
        assert_eq!(got.shape, vec![2, seq, 3]);
        for (i, g) in got.to_f64_vec().iter().enumerate() {
            let [bi, s, k] = unravel(i, &[2, seq, 3])[..] else {
                unreachable!()
            };
            assert_eq!(*g, v[idv[bi * seq + s] as usize * 3 + k]);
        }
    }
    // A middle axis with i64 indices: [2,4,3] gathered on axis 1 by [5] -> [2,5,3].
    let mut b = B::new("g1");
    let tbl = b.input("table", ty(DType::I32, &["2", "4", "3"]));
    let ids = b.input("ids", ty(DType::I64, &["5"]));
    let y = b.op(Op::Gather { axis: 1 }, &[tbl, ids]);
    b.out("y", y);
    let tv: Vec<i32> = (0..24).collect();
    let idv = vec![3i64, 0, 0, 2, 1];
    let got = run(
        &b.g,
        vec![
            ("table", Tensor::i32(vec![2, 4, 3], tv.clone()).unwrap()),
            ("ids", Tensor::i64(vec![5], idv.clone()).unwrap()),
        ],
    );
    assert_eq!(got.shape, vec![2, 5, 3]);
    let got = got.to_i64_vec().unwrap();
    for (i, g) in got.iter().enumerate() {
        let [o, j, k] = unravel(i, &[2, 5, 3])[..] else {
            unreachable!()
        };
        assert_eq!(*g, tv[ravel(&[o, idv[j] as usize, k], &[2, 4, 3])] as i64);
    }
}

#[test]
fn iota_counts_along_its_axis_in_any_dtype() {
    let mut b = B::new("io");
    let s = b.input("s", f32t(&["seq"]));
    let a0 = b.op(
        Op::Iota {
            ty: ty(DType::F32, &["seq", "3"]),
            axis: 0,
        },
        &[],
    );
    let a1 = b.op(
        Op::Iota {
            ty: ty(DType::I32, &["seq", "3"]),
            axis: 1,
        },
        &[],
    );
    let big = b.op(
        Op::Iota {
            ty: ty(DType::BF16, &["300"]),
            axis: 0,
        },
        &[],
    );
    b.out("a0", a0);
    b.out("a1", a1);
    b.out("big", big);
    b.out("s", s);
    for seq in [0usize, 1, 4] {
        let outs = kiln_ir::interp::eval(
            &b.g,
            &named(vec![("s", f32_tensor(&[seq], &vec![0.0; seq]))]),
            &no_params(),
        )
        .unwrap();
        let want0: Vec<f64> = (0..seq * 3).map(|i| (i / 3) as f64).collect();
        let want1: Vec<i64> = (0..seq * 3).map(|i| (i % 3) as i64).collect();
        assert_eq!(outs["a0"].to_f64_vec(), want0);
        assert_eq!(outs["a1"].to_i64_vec().unwrap(), want1);
        // bf16 has 8 significant bits: 257 rounds to 256 (tie to even), 299 to 300.
        let big = outs["big"].to_f64_vec();
        assert_eq!((big[255], big[257], big[299]), (255.0, 256.0, 300.0));
    }
}

#[test]
fn const_literals_become_tensors_of_their_dtype() {
    let mut b = B::new("cst");
    let f = b.op(
        Op::Const(Literal::floats(
            DType::F16,
            vec![2, 2],
            &[0.1, -2.0, 65504.0, 1e-8],
        )),
        &[],
    );
    let i = b.op(
        Op::Const(Literal::ints(DType::I8, vec![3], &[1, -1, 200])),
        &[],
    );
    let p = b.op(
        Op::Pad {
            axis: 0,
            low: Dim::from(1),
            high: Dim::from(0),
            value: F64Bits(f64::NEG_INFINITY),
        },
        &[f],
    );
    b.out("f", f);
    b.out("i", i);
    b.out("p", p);
    let outs = kiln_ir::interp::eval(&b.g, &named(vec![]), &no_params()).unwrap();
    assert_eq!(outs["f"].dtype(), DType::F16);
    let want: Vec<f64> = [0.1, -2.0, 65504.0, 1e-8]
        .iter()
        .map(|&x| round_f16(x).to_f64())
        .collect();
    assert_eq!(outs["f"].to_f64_vec(), want);
    assert!(matches!(&outs["i"].data, TensorData::I8(v) if v == &vec![1, -1, -56]));
    assert_eq!(outs["p"].shape, vec![3, 2]);
    assert_eq!(outs["p"].to_f64_vec()[..2], [f64::NEG_INFINITY; 2]);
}

/// `update_slice` against a hand-written copy-then-overwrite, on every axis.
#[test]
fn update_slice_replaces_exactly_the_region() {
    use kiln_ir::{interp, Bindings, Op, Tensor};
    let base: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let base = Tensor::f32(vec![2, 3, 4], base).unwrap();
    for axis in 0..3 {
        let mut ushape = vec![2, 3, 4];
        ushape[axis] = 1;
        let n: usize = ushape.iter().product();
        let upd = Tensor::f32(ushape.clone(), (0..n).map(|i| -1.0 - i as f32).collect()).unwrap();
        let start = base.shape[axis] - 1;
        let op = Op::UpdateSlice {
            axis,
            start: (start as i64).into(),
        };
        let got = interp::eval_op(
            &op,
            &[base.clone(), upd.clone()],
            &Bindings::new(),
            &Default::default(),
        )
        .unwrap()
        .remove(0);
        let (b, u) = (base.to_f32_vec(), upd.to_f32_vec());
        let mut want = b.clone();
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    let idx = [i, j, k];
                    if idx[axis] == start {
                        let mut ui = idx;
                        ui[axis] = 0;
                        want[(i * 3 + j) * 4 + k] =
                            u[(ui[0] * ushape[1] + ui[1]) * ushape[2] + ui[2]];
                    }
                }
            }
        }
        assert_eq!(got.to_f32_vec(), want, "axis {axis}");
    }
    // An update that does not fit is an error, not a panic.
    let op = Op::UpdateSlice {
        axis: 0,
        start: 2.into(),
    };
    let upd = Tensor::f32(vec![1, 3, 4], vec![0.0; 12]).unwrap();
    assert!(interp::eval_op(&op, &[base, upd], &Bindings::new(), &Default::default()).is_err());
}
