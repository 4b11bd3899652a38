//! The built-in models build verified graphs whose parameters match their weights.

use kiln_models::builtin_models;

#[test]
fn every_builtin_builds_and_its_weights_match() {
    for m in builtin_models() {
        let g = (m.build)().unwrap_or_else(|e| panic!("{}: {e}", m.name));
        kiln_ir::verify(&g).unwrap();
        let w = (m.weights)(0);
        if m.shape_only {
            // Shapes for inspection only: no weights to compare.
            assert!(w.is_empty(), "{}", m.name);
            assert!(!g.params().is_empty(), "{}", m.name);
            continue;
        }
        let params = g.params();
        assert_eq!(params.len(), w.len(), "{}", m.name);
        for (name, ty) in params {
            let t = &w[&name];
            let want: Vec<usize> = ty
                .shape
                .iter()
                .map(|d| d.as_const().unwrap() as usize)
                .collect();
            assert_eq!(t.shape, want, "{name}");
            assert_eq!(t.dtype(), ty.dtype, "{name}");
        }
    }
}

#[test]
fn weights_are_deterministic_per_seed() {
    let m = kiln_models::builtin("tiny-decoder").unwrap();
    assert_eq!((m.weights)(7)["layers.0.wq"], (m.weights)(7)["layers.0.wq"]);
    assert_ne!((m.weights)(7)["layers.0.wq"], (m.weights)(8)["layers.0.wq"]);
}
