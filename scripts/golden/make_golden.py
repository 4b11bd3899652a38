#!/usr/bin/env python3
"""Write reference ("golden") outputs of small random Hugging Face models.

Usage:  python scripts/golden/make_golden.py --out tests/golden

For every case below this writes <out>/<name>/ with the checkpoint exactly as
`save_pretrained` leaves it (config.json, model.safetensors or shards,
generation_config.json) and golden.safetensors with:

  tokens        i64 [T]         fixed token ids
  logits        f32 [T, vocab]  logits of one forward pass over `tokens`
                                (eval mode, batch 1, no cache)
  greedy_prompt i64 [P]         prompt for greedy decoding
  greedy_ids    i64 [N]         the N new tokens of
                                model.generate(prompt, do_sample=False,
                                max_new_tokens=N, min_new_tokens=N)

and golden.json (versions, stored dtype, smallest greedy margin, notes).

The expected outputs are always computed from a model loaded back from the
directory just written, in float32, so they describe the files on disk
(for half-precision checkpoints: the f32 computation on the rounded weights).

The checkpoints carry no EOS/BOS/PAD token (all None), so generation can never
stop early and no logits processor masks any token: greedy_ids is the plain
argmax chain.  Prompts are chosen (deterministically: the first seeded
candidate that qualifies) so that at every greedy step the best logit beats
the runner-up by at least MIN_MARGIN, so a correct implementation with a
different float summation order reproduces the ids, and so that the chain
uses at least MIN_DISTINCT different tokens.

The random init is HF's with initializer_range INIT_STD, then: every tensor
HF initialises to a constant (norm weights, Mamba D, conv bias) gets noise,
and Mamba's in/x/out projections are scaled by MAMBA_PROJ_SCALE.

Everything is seeded and runs on one CPU thread, so two runs give
bit-identical files (for the same torch/transformers versions).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM

T_TOKENS = 16
P_PROMPT = 5
N_NEW = 32
MIN_MARGIN = 1e-3
# Random-init std. HF's default (0.02) gives nearly flat logits, where greedy
# decoding is decided by float noise; a larger std gives clear winners.
INIT_STD = 0.15
MAMBA_PROJ_SCALE = 3.0
# A greedy chain must use at least this many distinct tokens (a chain that
# repeats one token cannot tell a broken model from a working one).
MIN_DISTINCT = 8


@dataclass
class Case:
    name: str
    family: str  # "llama" | "mamba"
    config: dict
    seed: int
    store_dtype: torch.dtype = torch.float32
    shards: int = 1
    # Rewrite config.json after saving (see rewrite_config) to cover other
    # layouts a loader meets in the wild.
    rewrite: str | None = None
    notes: list[str] = field(default_factory=list)


LLAMA_BASE = dict(
    max_position_embeddings=128,
    attention_bias=False,
    mlp_bias=False,
    hidden_act="silu",
    initializer_range=INIT_STD,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

MAMBA_BASE = dict(
    num_hidden_layers=2,
    expand=2,
    conv_kernel=4,
    initializer_range=INIT_STD,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)


def llama(**kw) -> dict:
    return {**LLAMA_BASE, **kw}


def mamba(**kw) -> dict:
    return {**MAMBA_BASE, **kw}


CASES = [
    Case(
        "llama-mha",
        "llama",
        llama(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
              intermediate_size=160, vocab_size=96, tie_word_embeddings=False, rms_norm_eps=1e-6,
              rope_theta=10000.0),
        seed=1,
        rewrite="legacy-rope",
        notes=["config.json rewritten to the transformers 4.x layout: top-level `rope_theta` "
               "(no `rope_parameters`), `torch_dtype` instead of `dtype`, no `head_dim` "
               "(= hidden/heads); transformers 5 loads both layouts."],
    ),
    Case(
        "llama-gqa-tied",
        "llama",
        llama(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
              intermediate_size=128, vocab_size=96, tie_word_embeddings=True, rms_norm_eps=1e-5,
              rope_theta=10000.0),
        seed=2,
        notes=["tied embeddings: the file has no lm_head.weight; the head is model.embed_tokens.weight."],
    ),
    Case(
        "llama-mqa-odd",
        "llama",
        llama(hidden_size=48, num_attention_heads=3, num_key_value_heads=1, num_hidden_layers=3,
              intermediate_size=100, vocab_size=83, tie_word_embeddings=False, rms_norm_eps=1e-5,
              rope_theta=10000.0),
        seed=3,
    ),
    Case(
        "llama-headdim",
        "llama",
        llama(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
              num_hidden_layers=2, intermediate_size=128, vocab_size=96, tie_word_embeddings=False,
              rms_norm_eps=1e-6, rope_theta=500000.0),
        seed=4,
        notes=["head_dim 24 != hidden/heads (16): q_proj is [96, 64], o_proj is [64, 96]."],
    ),
    Case(
        "llama-sharded",
        "llama",
        llama(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
              intermediate_size=160, vocab_size=96, tie_word_embeddings=False, rms_norm_eps=1e-5,
              rope_theta=10000.0),
        seed=5,
        shards=2,
        notes=["saved with a small max_shard_size: model.safetensors.index.json + 2 shards."],
    ),
    Case(
        "llama-bf16",
        "llama",
        llama(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
              intermediate_size=128, vocab_size=96, tie_word_embeddings=True, rms_norm_eps=1e-5,
              rope_theta=10000.0),
        seed=6,
        store_dtype=torch.bfloat16,
        notes=["weights stored in bfloat16; golden outputs are the float32 computation on the "
               "bf16 weights widened to f32."],
    ),
    Case(
        "llama-f16",
        "llama",
        llama(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
              intermediate_size=160, vocab_size=96, tie_word_embeddings=False, rms_norm_eps=1e-6,
              rope_theta=10000.0),
        seed=7,
        store_dtype=torch.float16,
        notes=["weights stored in float16; golden outputs are the float32 computation on the "
               "f16 weights widened to f32."],
    ),
    Case(
        "mamba-auto-rank",
        "mamba",
        mamba(hidden_size=32, state_size=8, vocab_size=100, time_step_rank="auto",
              layer_norm_epsilon=1e-5),
        seed=11,
        rewrite="mamba-auto-rank",
        notes=["time_step_rank \"auto\" = ceil(hidden/16) = 2; config.json keeps the string "
               "\"auto\" (as hub checkpoints made from it may), transformers resolves it on load."],
    ),
    Case(
        "mamba-explicit-rank",
        "mamba",
        mamba(hidden_size=48, state_size=16, vocab_size=100, time_step_rank=4,
              layer_norm_epsilon=1e-5),
        seed=12,
        notes=["explicit time_step_rank 4 (auto would give 3)."],
    ),
]


def build_model(case: Case) -> torch.nn.Module:
    torch.manual_seed(case.seed)
    if case.family == "llama":
        cfg = LlamaConfig(**case.config)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = MambaConfig(**case.config)
        model = MambaForCausalLM(cfg)
    with torch.no_grad():
        # HF initialises norm weights, Mamba's D (all 1) and conv bias (all 0)
        # to constants; perturb every constant tensor so that an implementation
        # ignoring one of them cannot match the golden logits.
        for p in model.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(0.2 * torch.randn_like(p))
        if case.family == "mamba":
            # With HF's init the tied embedding dominates the residual stream and
            # greedy decoding just repeats the last token; stronger mixer
            # projections make the mixer decide the output.
            for name, p in model.named_parameters():
                if name.endswith(("in_proj.weight", "x_proj.weight", "out_proj.weight")):
                    p.mul_(MAMBA_PROJ_SCALE)
    return model.eval()


def rewrite_config(case: Case, path: Path) -> None:
    cfg = json.loads(path.read_text())
    if case.rewrite == "legacy-rope":
        rope = cfg.pop("rope_parameters")
        assert rope.get("rope_type", "default") == "default", rope
        cfg["rope_theta"] = rope["rope_theta"]
        cfg["torch_dtype"] = cfg.pop("dtype")
        if cfg["head_dim"] * cfg["num_attention_heads"] == cfg["hidden_size"]:
            del cfg["head_dim"]
    elif case.rewrite == "mamba-auto-rank":
        cfg["time_step_rank"] = "auto"
    else:
        raise ValueError(f"unknown rewrite {case.rewrite!r}")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load_model(case: Case, d: Path) -> torch.nn.Module:
    cls = LlamaForCausalLM if case.family == "llama" else MambaForCausalLM
    kw = {"attn_implementation": "eager"} if case.family == "llama" else {}
    return cls.from_pretrained(d, dtype=torch.float32, local_files_only=True, **kw).eval()


def greedy(model, prompt: torch.Tensor) -> tuple[torch.Tensor, float]:
    out = model.generate(
        prompt[None, :],
        attention_mask=torch.ones(1, prompt.numel(), dtype=torch.long),
        do_sample=False,
        max_new_tokens=N_NEW,
        min_new_tokens=N_NEW,
        eos_token_id=None,
        pad_token_id=None,
        bos_token_id=None,
        return_dict_in_generate=True,
        output_logits=True,
    )
    new = out.sequences[0, prompt.numel():]
    assert new.numel() == N_NEW, new.shape
    margin = float("inf")
    for step_logits in out.logits:
        top2 = torch.topk(step_logits[0].float(), 2).values
        margin = min(margin, float(top2[0] - top2[1]))
    return new.clone(), margin


def slow_path_check() -> list[str]:
    """Mamba must run the pure-torch reference path: no fused-kernel packages."""
    found = [m for m in ("mamba_ssm", "causal_conv1d", "mambapy", "kernels")
             if importlib.util.find_spec(m) is not None]
    if found:
        sys.exit(f"error: {found} installed; the golden Mamba outputs must come from the "
                 "pure-torch path. Use a venv without them.")
    return ["mamba_ssm, causal_conv1d, mambapy and kernels are not installed, so MambaMixer "
            "uses the pure-torch functions (sequential selective scan; the associative scan is "
            "only taken under torch.compile)."]


def make_case(case: Case, out: Path) -> dict:
    d = out / case.name
    if d.exists():
        shutil.rmtree(d)
    model = build_model(case).to(case.store_dtype)

    if case.shards > 1:
        # Shard limit just above half the data, so the weights split in two.
        total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        model.save_pretrained(d, max_shard_size=total // case.shards + 1024)
    else:
        model.save_pretrained(d)
    if case.rewrite:
        rewrite_config(case, d / "config.json")
    shard_files = sorted(p.name for p in d.glob("*.safetensors"))
    if case.shards > 1:
        assert (d / "model.safetensors.index.json").exists(), "no shard index written"
        assert len(shard_files) == case.shards, shard_files
    del model

    model = load_model(case, d)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1000 + case.seed)
    tokens = torch.randint(0, vocab, (T_TOKENS,), generator=g)
    with torch.no_grad():
        logits = model(tokens[None, :], use_cache=False).logits[0].float()
    assert logits.shape == (T_TOKENS, vocab) and torch.isfinite(logits).all()

    # First prompt (in seeded order) whose greedy chain has clear winners.
    for attempt in range(50):
        prompt = torch.randint(0, vocab, (P_PROMPT,), generator=g)
        ids, margin = greedy(model, prompt)
        if margin >= MIN_MARGIN and len(set(ids.tolist())) >= MIN_DISTINCT:
            break
    else:
        sys.exit(f"error: {case.name}: no prompt with greedy margin >= {MIN_MARGIN} "
                 f"and {MIN_DISTINCT} distinct tokens")

    # The cached generation and one uncached pass over prompt + ids must agree.
    with torch.no_grad():
        full = model(torch.cat([prompt, ids])[None, :], use_cache=False).logits[0]
    assert torch.equal(full[P_PROMPT - 1:-1].argmax(-1), ids), f"{case.name}: cache/no-cache mismatch"

    meta = {
        "model": case.name,
        "family": case.family,
        "stored_dtype": str(case.store_dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "min_greedy_margin": f"{margin:.6g}",
        "logits_std": f"{float(logits.std()):.6g}",
    }
    save_file(
        {
            "tokens": tokens.to(torch.int64).contiguous(),
            "logits": logits.contiguous(),
            "greedy_prompt": prompt.to(torch.int64).contiguous(),
            "greedy_ids": ids.to(torch.int64).contiguous(),
        },
        d / "golden.safetensors",
    )
    # Kept out of the safetensors header, whose metadata map is written in
    # hash order (not reproducible byte for byte).
    meta["greedy_prompt_attempts"] = attempt + 1
    meta["notes"] = case.notes
    (d / "golden.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in d.iterdir())
    print(f"{case.name:22s} params={sum(p.numel() for p in model.parameters()):7d} "
          f"files={shard_files} size={size / 1024:.0f} KiB margin={margin:.4g} "
          f"prompt_attempts={attempt + 1} logits_std={meta['logits_std']}")
    return {"name": case.name, "size": size, "margin": margin, "notes": case.notes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. tests/golden")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    slow_path_check()
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for case in CASES:
        total += make_case(case, args.out)["size"]
    print(f"total {total / 1024:.0f} KiB in {args.out} "
          f"(torch {torch.__version__}, transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
