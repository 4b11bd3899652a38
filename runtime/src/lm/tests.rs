//! [`ExecutorLm`] over a fake executor: what it feeds, with which sizes.

use super::*;
use crate::plan::{Buffer, Plan, PlanInput, PlanOutput, Storage};
use kiln_ir::{shape, Dim, TensorType};

const VOCAB: usize = 5;

/// A "decoder" whose logits row for token t peaks at (t + position) mod
/// vocab; with state it records the position in `pos` and checks `past`.
struct Fake {
    plan: Plan,
    state: Option<Tensor>,
    /// Every call: (tokens fed, sizes).
    calls: Vec<(Vec<i32>, Bindings)>,
}

fn fake(stateful: bool, logits: TensorType) -> Fake {
    let tokens = TensorType::new(DType::I32, shape!["seq"]);
    let mut inputs = vec![PlanInput {
        name: "tokens".into(),
        ty: tokens.clone(),
    }];
    let mut buffers = vec![
        Buffer {
            ty: tokens,
            storage: Storage::Input(0),
        },
        Buffer {
            ty: logits,
            storage: Storage::Temp { slot: 0 },
        },
    ];
    let mut outputs = vec![PlanOutput {
        name: "logits".into(),
        buffer: 1,
        alias: None,
    }];
    let mut symbols = vec!["seq".to_string()];
    if stateful {
        let ty = TensorType::new(DType::F32, shape![Dim::from("ctx")]);
        inputs.push(PlanInput {
            name: "pos".into(),
            ty: ty.clone(),
        });
        buffers.push(Buffer {
            ty,
            storage: Storage::Input(1),
        });
        outputs.push(PlanOutput {
            name: "pos_out".into(),
            buffer: 2,
            alias: Some("pos".into()),
        });
        symbols = vec!["ctx".into(), "past".into(), "seq".into()];
    }
    Fake {
        plan: Plan {
            name: "fake".into(),
            symbols,
            inputs,
            outputs,
            buffers,
            kernels: Vec::new(),
            steps: Vec::new(),
            load_steps: Vec::new(),
            num_slots: 1,
        },
        state: None,
        calls: Vec::new(),
    }
}

fn decoder(stateful: bool) -> Fake {
    fake(
        stateful,
        TensorType::new(DType::F32, shape![Dim::from("seq"), VOCAB]),
    )
}

impl Fake {
    fn logits(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        start: usize,
    ) -> Tensor {
        let ids = inputs["tokens"].to_f64_vec();
        self.calls
            .push((ids.iter().map(|&t| t as i32).collect(), sizes.clone()));
        let mut rows = vec![0.0f32; ids.len() * VOCAB];
        for (i, &t) in ids.iter().enumerate() {
            rows[i * VOCAB + (t as usize + start + i) % VOCAB] = 1.0;
        }
        Tensor::f32(vec![ids.len(), VOCAB], rows).unwrap()
    }
}

impl Executor for Fake {
    fn plan(&self) -> &Plan {
        &self.plan
    }
    fn run_with(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        let logits = self.logits(inputs, sizes, 0);
        Ok(BTreeMap::from([("logits".to_string(), logits)]))
    }
    fn state_names(&self) -> Vec<String> {
        let stateful = self.plan.inputs.len() > 1;
        stateful.then(|| "pos".to_string()).into_iter().collect()
    }
    fn init_state(&mut self, sizes: &Bindings) -> Result<(), RuntimeError> {
        let ctx = sizes["ctx"] as usize;
        self.state = Some(Tensor::f32(vec![ctx], vec![0.0; ctx]).unwrap());
        Ok(())
    }
    fn set_state(&mut self, _: &str, value: &Tensor) -> Result<(), RuntimeError> {
        self.state = Some(value.clone());
        Ok(())
    }
    fn state(&self, name: &str) -> Result<Tensor, RuntimeError> {
        self.state
            .clone()
            .ok_or_else(|| RuntimeError::StateNotInitialized { name: name.into() })
    }
    fn step(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        let past = sizes["past"] as usize;
        let mut state = self.state("pos")?.to_f32_vec();
        // The adapter's `past` is the number of positions written so far.
        let written = state.iter().take_while(|&&v| v != 0.0).count();
        assert_eq!(written, past, "past must count the tokens already fed");
        let logits = self.logits(inputs, sizes, past);
        for (i, t) in inputs["tokens"].to_f64_vec().into_iter().enumerate() {
            state[past + i] = t as f32 + 1.0;
        }
        self.state = Some(Tensor::f32(vec![state.len()], state).unwrap());
        Ok(BTreeMap::from([("logits".to_string(), logits)]))
    }
    fn device(&self) -> String {
        "fake".into()
    }
}

fn argmaxes(t: &Tensor) -> Vec<usize> {
    t.to_f32_vec()
        .chunks(VOCAB)
        .map(|r| r.iter().position(|&v| v == 1.0).unwrap())
        .collect()
}

#[test]
fn stateful_plans_get_new_tokens_and_past() {
    let mut lm = ExecutorLm::new(Box::new(decoder(true)), 8).unwrap();
    assert_eq!((lm.vocab(), lm.context()), (VOCAB, Some(8)));
    let a = lm.forward_all(&[1, 2, 3]).unwrap();
    assert_eq!(a.shape, [3, VOCAB]);
    assert_eq!(argmaxes(&a), [1, 3, 0]);
    let b = lm.forward_all(&[4]).unwrap();
    assert_eq!(argmaxes(&b), [(4 + 3) % VOCAB]);
    assert_eq!(lm.position(), 4);
    let calls: Vec<_> = lm
        .executor()
        .calls
        .iter()
        .map(|(t, s)| (t.clone(), s["past"]))
        .collect();
    assert_eq!(calls, [(vec![1, 2, 3], 0), (vec![4], 3)]);
    assert_eq!(lm.executor().calls[0].1["ctx"], 8);
}

#[test]
fn stateless_plans_rerun_the_history_and_keep_the_new_rows() {
    let mut lm = ExecutorLm::new(Box::new(decoder(false)), 8).unwrap();
    assert_eq!(lm.context(), None, "no `ctx` size: unbounded");
    lm.forward_all(&[1, 2, 3]).unwrap();
    let b = lm.forward_all(&[4]).unwrap();
    assert_eq!(b.shape, [1, VOCAB]);
    assert_eq!(argmaxes(&b), [(4 + 3) % VOCAB]);
    let fed: Vec<_> = lm.executor().calls.iter().map(|c| c.0.clone()).collect();
    assert_eq!(fed, [vec![1, 2, 3], vec![1, 2, 3, 4]]);
    assert!(lm.executor().calls[1].1.is_empty(), "no sizes to bind");
}

#[test]
fn prefill_and_decode_agree_and_generation_works() {
    let tokens = [3, 1, 4, 1, 0];
    for stateful in [true, false] {
        let mut lm = ExecutorLm::new(Box::new(decoder(stateful)) as Box<dyn Executor>, 16).unwrap();
        let p = lm.sequence_logits(&tokens, Feed::Prefill).unwrap();
        let d = lm.sequence_logits(&tokens, Feed::Decode).unwrap();
        assert_eq!(p, d, "stateful: {stateful}");
        let opts = crate::generate::GenerateOptions {
            max_new_tokens: 3,
            ..Default::default()
        };
        // Greedy: next = (last + position) mod vocab.
        let (out, _) = crate::generate::generate(&mut lm, &[2], &opts, &mut |_| true).unwrap();
        assert_eq!(out, [2, 3, 0], "stateful: {stateful}");
    }
}

#[test]
fn bad_calls_are_errors_that_leave_the_model_usable() {
    let mut lm = ExecutorLm::new(Box::new(decoder(true)), 4).unwrap();
    lm.forward_all(&[1, 2, 3]).unwrap();
    let e = lm.forward_all(&[1, 2]).unwrap_err();
    assert_eq!(e.to_string(), "2 tokens after 3 exceed the context of 4");
    assert_eq!(lm.forward_all(&[]).unwrap_err(), LmError::NoTokens);
    assert_eq!(
        lm.forward_all(&[5]).unwrap_err(),
        LmError::TokenOutOfRange {
            token: 5,
            vocab: VOCAB
        }
    );
    assert_eq!(lm.position(), 3);
    lm.forward_all(&[0]).unwrap();
    lm.reset_state().unwrap();
    assert_eq!(lm.position(), 0);
    lm.forward_all(&[1, 2, 3, 4]).unwrap();
}

#[test]
fn plans_that_are_not_decoders_are_refused() {
    let by_logits = |ty: TensorType| {
        ExecutorLm::new(Box::new(fake(false, ty)), 8)
            .err()
            .unwrap()
            .to_string()
    };
    let e = by_logits(TensorType::new(
        DType::F32,
        shape![Dim::from("seq"), Dim::from("vocab")],
    ));
    assert!(e.contains("`logits` must be f32[seq, vocab]"), "{e}");
    let e = by_logits(TensorType::new(DType::I32, shape![Dim::from("seq"), VOCAB]));
    assert!(e.starts_with("plan `fake` is not a decoder"), "{e}");
    let mut f = decoder(false);
    f.plan.inputs[0].name = "ids".into();
    let e = ExecutorLm::new(Box::new(f), 8).err().unwrap();
    assert!(e.to_string().contains("no `tokens` input"), "{e}");
    let mut f = decoder(false);
    f.plan.outputs.clear();
    let e = ExecutorLm::new(Box::new(f), 8).err().unwrap();
    assert!(e.to_string().contains("no `logits` output"), "{e}");
}
