"""Sampling from the saved model and writing models/default/README.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

NEW_TOKENS = 60


def sample(out: Path, prompts: list[str], seed: int) -> list[dict]:
    """Greedy and temperature-0.8 continuations, from the files just saved."""
    tok = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    eot = model.config.eos_token_id
    results = []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([tok.encode(prompt)])
        mask = torch.ones_like(ids)
        greedy = model.generate(ids, attention_mask=mask, do_sample=False,
                                max_new_tokens=NEW_TOKENS, pad_token_id=eot)
        torch.manual_seed(seed + i)
        sampled = model.generate(ids, attention_mask=mask, do_sample=True, temperature=0.8,
                                 top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS, pad_token_id=eot)
        results.append({
            "prompt": prompt,
            "greedy": tok.decode(greedy[0, ids.shape[1]:]),
            "sampled": tok.decode(sampled[0, ids.shape[1]:]),
        })
    return results


def _fmt(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.3f}"


def write(out: Path, r: dict) -> None:
    a = r["args"]
    with open(out / "train_log.tsv", "w") as f:
        f.write("step\tlr\ttrain_loss\tval_loss\tseconds\n")
        for step, lr, tl, vl, sec in r["log"]:
            f.write(f"{step}\t{lr:.6g}\t{tl:.5f}\t{'' if math.isnan(vl) else f'{vl:.5f}'}\t{sec:.1f}\n")

    # A short loss curve: every row that has a validation loss.
    curve = [row for row in r["log"] if not math.isnan(row[3])]
    curve_rows = "\n".join(
        f"| {s} | {lr:.2e} | {_fmt(tl)} | {_fmt(vl)} | {sec / 60:.1f} |" for s, lr, tl, vl, sec in curve)
    first = r["log"][0] if r["log"] else None
    sample_md = []
    for s in r["samples"]:
        sample_md.append(f"**Prompt:** `{s['prompt']}`\n\n"
                         f"greedy:\n\n```text\n{s['prompt']}{s['greedy']}\n```\n\n"
                         f"temperature 0.8:\n\n```text\n{s['prompt']}{s['sampled']}\n```\n")
    weights = (out / "model.safetensors").stat().st_size
    cfg = json.loads((out / "config.json").read_text())
    text = f"""# Kiln's default model

A small Llama trained from scratch on the King James Bible by
`scripts/train/train.py`, so that `kiln run` prints English without any
download. It writes KJV-flavoured English: plausible-looking verses, not
sense.

| file | what |
|---|---|
| `config.json` | `LlamaForCausalLM` configuration (transformers {r['versions']['transformers']} layout: `rope_parameters.rope_theta`) |
| `model.safetensors` | float32 weights, {weights / 1e6:.1f} MB ({r['n_params']:,} parameters; tied embeddings, so no `lm_head.weight`) |
| `tokenizer.json` | byte-level BPE (GPT-2 style pre-tokenizer and decoder), {r['vocab']} tokens, `{'<|endoftext|>'}` = id 0 |
| `tokenizer_config.json` | lets `AutoTokenizer` / `PreTrainedTokenizerFast` load it |
| `generation_config.json` | bos = eos = pad = 0; sampling at temperature 0.8 (no top-k / top-p) |
| `train_log.tsv` | loss every {a['log_every']} steps, validation loss every {a['eval_every']} |

## Model

hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers,
{cfg['num_attention_heads']} heads / {cfg['num_key_value_heads']} KV heads
(head_dim {cfg['head_dim']}), MLP {cfg['intermediate_size']} (SiLU-gated),
vocab {cfg['vocab_size']}, RMSNorm eps {cfg['rms_norm_eps']}, RoPE θ
{cfg['rope_parameters']['rope_theta']:g}, max positions {cfg['max_position_embeddings']},
tied input/output embeddings.

## Corpus and license

The King James Version of the Bible (1611), from the Debian 12 packages
`bible-kjv` / `bible-kjv-text` 4.38 (`apt-get install bible-kjv`): the text
is printed with `bible -f gen1:1-rev22:21` (31,102 verses, sha256
`{r['corpus_sha']}`), one verse per line without its reference, and
`<|endoftext|>` before each chapter. The KJV text is in the **public domain**
(its copyright expired; in the United Kingdom the Crown's letters patent
still restrict printing) — the package's copyright file says "The copyright
for the King James Version text of the Bible is expired". The package's own
programs are GPL-2+; none of them is included here. This model is a work
derived from public-domain text.

Every 40th chapter ({r['chapters'][1]} chapters) is held out for validation;
the tokenizer and the model see the other {r['chapters'][0]}.
{r['characters']:,} characters in all; {r['tokens'][0]:,} training tokens and
{r['tokens'][1]:,} validation tokens with this tokenizer.

## Training

AdamW (β 0.9/0.95, weight decay {a['weight_decay']} on matrices), peak lr
{a['lr']:g}, {a['warmup']} warmup steps then cosine decay to {a['min_lr_ratio']:g}×
over max(step / {a['steps']}, time / {a['time_budget']:.0f} s); batch
{a['batch']} × {a['seq']} tokens from random offsets; grad-norm clip 1.0; seed
{a['seed']}; float32; torch.set_num_threads({a['threads']}) on a 2-core AMD
EPYC shared with other jobs (compiler builds): there, two torch threads ran
about 5× slower than one, as each waits at OpenMP barriers for the other.

Stopped after **{r['steps']} steps** ({r['stop_reason']}): {r['steps'] * a['batch'] * a['seq']:,}
tokens ≈ {r['steps'] * a['batch'] * a['seq'] / r['tokens'][0]:.1f} epochs, in
{r['train_seconds'] / 60:.1f} min of training ({r['total_seconds'] / 60:.1f} min for
the whole script). First logged train loss {_fmt(first[2]) if first else '—'}
(step {first[0] if first else '—'}); **final loss (nats/token): train
{r['final_train']:.3f}, validation {r['final_val']:.3f}** (train on 256
windows, validation on all held-out windows, 128 tokens each).

In the table, train loss is the mean over the preceding logging window of batches and val loss is
measured on the first 64 held-out windows only.

| step | lr | train loss | val loss | minutes |
|---|---|---|---|---|
{curve_rows}

Versions: Python {r['versions']['python']}, torch {r['versions']['torch']} (CPU),
transformers {r['versions']['transformers']}; pinned in
`scripts/train/requirements.txt`.

## Samples

Made with transformers from the saved files: prompt encoded without a BOS
token, {NEW_TOKENS} new tokens at most; greedy, and temperature 0.8 with no
top-k/top-p (torch seed {a['seed']} + prompt index).

{chr(10).join(sample_md)}
## Reproducing

```sh
apt-get install bible-kjv
python3.11 -m venv .venv-py && .venv-py/bin/pip install -r scripts/train/requirements.txt
.venv-py/bin/python scripts/train/train.py --out models/default
```

The run is stopped by a time budget, so the weights depend on the machine's
speed. `--time-budget 0 --steps {r['steps']}` trains as many steps with the
schedule driven by step count alone: close to this run, and repeatable, but
not bit-identical to it.
"""
    (out / "README.md").write_text(text)
