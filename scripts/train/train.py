#!/usr/bin/env python3
"""Train Kiln's default model: a small Llama on the King James Bible, on CPU.

Usage:  python scripts/train/train.py --out models/default

Steps: read the corpus from the Debian package bible-kjv (see corpus.py),
train a byte-level BPE tokenizer on it, train a LlamaForCausalLM from scratch
until the step or time budget is spent, save the model
(config.json, model.safetensors, generation_config.json, tokenizer.json,
tokenizer_config.json), sample a few continuations and write README.md and
train_log.tsv next to it.

The learning-rate schedule (linear warmup, cosine decay) runs on
progress = max(step / steps, elapsed / time_budget), so a slow machine still
finishes the decay inside the budget. That makes a time-limited run depend on
the machine's speed; `--time-budget 0 --steps N` (N from the README) trains
by steps alone and is reproducible on one machine and library version.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402
import report  # noqa: E402

EOT = "<|endoftext|>"
PROMPTS = ["In the beginning", "And Jesus said unto them,", "The LORD is my shepherd;",
           "And it came to pass, when the king"]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=640)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6000, help="upper bound on optimizer steps")
    ap.add_argument("--time-budget", type=float, default=40 * 60,
                    help="seconds of training before stopping (0: no limit)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=500)
    # One thread: on the shared 2-core machine, two OpenMP threads spin at
    # barriers whenever the other is descheduled, and ran ~5x slower than one.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    return ap.parse_args()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_tokenizer(texts: list[str], vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(EOT) == 0, "the end-of-text token must be id 0"
    return tok


def token_stream(tok: Tokenizer, chapters: list[corpus.Chapter]) -> torch.Tensor:
    """<|endoftext|> before every chapter, chapters in order."""
    eot = tok.token_to_id(EOT)
    ids: list[int] = []
    for enc in tok.encode_batch([c.text() for c in chapters]):
        ids.append(eot)
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long)


def lr_at(args, step: int, progress: float) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    floor = args.lr * args.min_lr_ratio
    return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def evaluate(model, stream: torch.Tensor, seq: int, max_windows: int = 64) -> float:
    model.eval()
    n = min(max_windows, (stream.numel() - 1) // seq)
    x = stream[: n * seq + 1]
    inputs = x[:-1].view(n, seq)
    labels = x[1:].view(n, seq)
    losses = []
    for i in range(0, n, 16):
        logits = model(inputs[i:i + 16]).logits
        losses.append(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[i:i + 16].reshape(-1), reduction="sum"))
    model.train()
    return float(sum(losses) / (n * seq))


def main() -> None:
    args = parse_args()
    t_start = time.time()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    chapters, corpus_sha = corpus.read_kjv()
    train_ch, val_ch = corpus.split(chapters)
    print(f"corpus: {len(chapters)} chapters, {sum(len(c.verses) for c in chapters)} verses, "
          f"{sum(len(c.text()) for c in chapters)} characters, sha256 {corpus_sha[:16]}…", flush=True)

    tok = train_tokenizer([c.text() for c in train_ch], args.vocab)
    train_ids = token_stream(tok, train_ch)
    val_ids = token_stream(tok, val_ch)
    print(f"tokenizer: vocab {tok.get_vocab_size()}; train {train_ids.numel()} tokens, "
          f"val {val_ids.numel()} tokens", flush=True)

    eot = tok.token_to_id(EOT)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=256,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    gen = torch.Generator().manual_seed(args.seed)
    max_start = train_ids.numel() - args.seq - 1

    log = []  # (step, lr, train_loss, val_loss or nan, elapsed)
    model.train()
    t_train = time.time()
    running, running_n = 0.0, 0
    step = 0
    stop_reason = "step budget"
    while step < args.steps:
        elapsed = time.time() - t_train
        progress = step / args.steps
        if args.time_budget > 0:
            progress = max(progress, elapsed / args.time_budget)
            if progress >= 1.0:
                stop_reason = "time budget"
                break
        lr = lr_at(args, step, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, max_start, (args.batch,), generator=gen)
        batch = torch.stack([train_ids[s:s + args.seq + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        running += loss.item()
        running_n += 1
        if step % args.log_every == 0:
            val = evaluate(model, val_ids, args.seq) if step % args.eval_every == 0 else float("nan")
            train_loss = running / running_n
            running, running_n = 0.0, 0
            log.append((step, lr, train_loss, val, time.time() - t_train))
            print(f"step {step:5d} lr {lr:.2e} train {train_loss:.4f}"
                  + (f" val {val:.4f}" if not math.isnan(val) else "")
                  + f" {time.time() - t_train:7.1f}s", flush=True)
    train_seconds = time.time() - t_train
    final_val = evaluate(model, val_ids, args.seq, max_windows=10_000)
    final_train = evaluate(model, train_ids, args.seq, max_windows=256)
    print(f"stopped after {step} steps ({stop_reason}), {train_seconds:.0f}s; "
          f"train loss {final_train:.4f}, val loss {final_val:.4f}", flush=True)

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    gen_config = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        do_sample=True, temperature=0.8, top_k=0, top_p=1.0, max_length=256,
    )
    model.generation_config = gen_config
    model.save_pretrained(args.out)
    tok.save(str(args.out / "tokenizer.json"))
    (args.out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT, "eos_token": EOT, "pad_token": EOT,
        "model_max_length": 256,
    }, indent=2) + "\n")

    samples = report.sample(args.out, PROMPTS, seed=args.seed)
    report.write(args.out, dict(
        args=vars(args) | {"out": str(args.out)},
        corpus_sha=corpus_sha,
        chapters=(len(train_ch), len(val_ch)),
        tokens=(train_ids.numel(), val_ids.numel()),
        characters=sum(len(c.text()) for c in chapters),
        vocab=tok.get_vocab_size(),
        n_params=n_params,
        steps=step,
        stop_reason=stop_reason,
        train_seconds=train_seconds,
        total_seconds=time.time() - t_start,
        final_train=final_train,
        final_val=final_val,
        log=log,
        samples=samples,
        versions=dict(torch=torch.__version__, transformers=transformers.__version__,
                      python=sys.version.split()[0]),
    ))
    print(f"wrote {args.out} in {time.time() - t_start:.0f}s total", flush=True)


if __name__ == "__main__":
    main()
