#!/usr/bin/env python3
"""Check Kiln artifacts against Hugging Face transformers on the same device.

Runs where there is Python with torch, transformers and safetensors but no
Rust: a GPU machine that was handed the directory `scripts/gpu/prepare.sh`
builds (artifacts, the `kiln-run` binary and this script). For every
artifact in that directory that has a Hugging Face `config.json`:

  (a) logits: `kiln-run logits` on a fixed token sequence, as one prefill and
      token by token (`--decode`), against `transformers` running the same
      weights (the artifact's `weights.safetensors`, widened to f32) on the
      same device; relative L2 must be <= 1e-3 (f32 compute) or 2e-2 (bf16/f16);
  (b) speed: Kiln's prefill (up to 128 tokens) and greedy decode tokens/s
      (`kiln-run --warmup 1 --stats-json`) against transformers' forward pass and
      `generate` (greedy, KV cache or recurrent state, warmed up,
      synchronized), measured in the same run;
  (c) prints one markdown table and writes it to $OUT/gpu-table.md (and the
      raw numbers to $OUT/gpu-results.json) when OUT is set.

Exits 1 if any logits check fails or an artifact cannot be checked.

    python3 check.py [--carry DIR] [--device cuda|cuda:N|cpu] [--only NAME ...]

`--device cpu` runs CPU artifacts (`kiln compile --target cpu`) against
torch on the CPU, which is how the script is tested without a GPU.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file

SEED = 0
LOGITS_TOKENS = 32  # the fixed sequence for the logits check (capped by the context)
PREFILL_TOKENS = 128
DECODE_PROMPT = 8
DECODE_TOKENS = 128
GREEDY_TOKENS = 16  # greedy ids compared with transformers
TOL = {"f32": 1e-3, "bf16": 2e-2}
RUN_TIMEOUT_S = 120  # one kiln-run call; a hang must not eat the device lease


def parse_args():
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--carry", type=Path, default=here,
                   help="directory of artifacts and kiln-run (default: this script's directory)")
    p.add_argument("--kiln-run", type=Path, default=None,
                   help="the kiln-run binary (default: CARRY/kiln-run)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--only", nargs="*", default=None, help="check only these artifacts")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed kiln-run processes per measurement (median reported)")
    p.add_argument("--budget-s", type=float, default=400,
                   help="past this many seconds, remaining artifacts get the logits check only, "
                        "so the table always comes out inside the device call's limit")
    return p.parse_args()


# ---------------------------------------------------------------- environment

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def card_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} threads)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def driver_version(device):
    if device.type != "cuda":
        return "n/a (cpu)"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
             f"--id={device.index or 0}"],
            capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"unknown (torch CUDA {torch.version.cuda})"


# ---------------------------------------------------------------- artifacts

def artifacts(carry, only):
    found = sorted(d for d in carry.iterdir() if (d / "manifest.json").is_file())
    if only:
        missing = set(only) - {d.name for d in found}
        if missing:
            sys.exit(f"check.py: no artifact called {', '.join(sorted(missing))} in {carry}")
        found = [d for d in found if d.name in only]
    return found


def compute_dtype(art):
    """bf16 when the plan keeps activations in half precision, else f32."""
    plan = json.loads((art / "plan.json").read_text())
    halves = {"BF16", "F16"}
    for b in plan["buffers"]:
        storage = b["storage"]
        kind = storage if isinstance(storage, str) else next(iter(storage))
        if kind == "Temp" and b["ty"]["dtype"] in halves:
            return "bf16"
    return "f32"


def context_of(config):
    """The longest sequence the model takes (None: no limit, a recurrent model)."""
    return getattr(config, "max_position_embeddings", None)


def fixed_tokens(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


# ---------------------------------------------------------------- kiln-run

def kiln_run(kiln, args):
    t = time.perf_counter()
    try:
        out = subprocess.run([str(kiln)] + args, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"kiln-run {' '.join(args[:2])}: no answer in {RUN_TIMEOUT_S} s")
    if out.returncode != 0:
        raise RuntimeError(f"kiln-run {' '.join(args[:3])} failed ({out.returncode}): "
                           f"{out.stderr.strip()[-2000:]}")
    return time.perf_counter() - t


def kiln_logits(kiln, art, tokens, device, decode, tmp):
    out = Path(tmp) / ("decode.safetensors" if decode else "prefill.safetensors")
    args = ["logits", str(art), "--tokens", ",".join(map(str, tokens)),
            "--out", str(out), "--device", device]
    if decode:
        args.append("--decode")
    kiln_run(kiln, args)
    with safe_open(str(out), framework="pt") as f:
        return f.get_tensor("logits").to(torch.float64)


def kiln_greedy_ids(kiln, art, tokens, new_tokens, device):
    """The token ids greedy generation prints (`kiln-run --ids`): the path
    that asks the executor for `last_logits` alone."""
    out = subprocess.run([str(kiln), str(art), "--tokens", ",".join(map(str, tokens)),
                          "--max-new-tokens", str(new_tokens), "--temperature", "0",
                          "--ids", "--device", device],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"kiln-run {art.name} --ids failed ({out.returncode}): "
                           f"{out.stderr.strip()[-2000:]}")
    return [int(t) for t in out.stdout.split()]


@torch.no_grad()
def hf_greedy_ids(model, tokens, new_tokens, device):
    ids = torch.tensor([tokens], device=device)
    out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    return out[0, len(tokens):].tolist()


def kiln_generate_stats(kiln, art, tokens, new_tokens, device, tmp):
    stats = Path(tmp) / "stats.json"
    kiln_run(kiln, [str(art), "--tokens", ",".join(map(str, tokens)),
                    "--max-new-tokens", str(new_tokens), "--temperature", "0",
                    "--ids", "--device", device, "--warmup", "1",
                    "--stats-json", str(stats)])
    return json.loads(stats.read_text())


# ---------------------------------------------------------------- transformers

def hf_model(art, device):
    """The artifact's weights in transformers' model for its config, f32."""
    config = transformers.AutoConfig.from_pretrained(str(art))
    with torch.device("cpu"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: (v.float() if v.is_floating_point() else v)
             for k, v in load_file(str(art / "weights.safetensors")).items()}
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys)
    # A tied output head has no tensor of its own: it is the embedding.
    tied = getattr(config, "tie_word_embeddings", False)
    if tied:
        missing = {k for k in missing if not k.endswith("lm_head.weight")}
    if missing or result.unexpected_keys:
        raise RuntimeError(f"weights.safetensors does not fit {type(model).__name__}: "
                           f"missing {sorted(missing)}, unexpected {sorted(result.unexpected_keys)}")
    if tied:
        model.tie_weights()
    return config, model.to(device).eval()


@torch.no_grad()
def narrow_weights(model, weights):
    """The reference for an artifact compiled with `--weights f16|bf16`: every
    linear layer's weight and the embedding table rounded to that dtype, as
    Kiln rounds them at load, all else f32 (a tied head is rounded once)."""
    if weights == "f32":
        return
    dt = {"f16": torch.float16, "bf16": torch.bfloat16}[weights]
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
            mod.weight.copy_(mod.weight.to(dt).float())


@torch.no_grad()
def hf_logits(model, tokens, device):
    ids = torch.tensor([tokens], device=device)
    return model(ids, use_cache=False).logits[0].to(torch.float64).cpu()


@torch.no_grad()
def hf_prefill_ms(model, tokens, device, repeats):
    ids = torch.tensor([tokens], device=device)
    for _ in range(2):
        model(ids, use_cache=True)
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        model(ids, use_cache=True)
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def hf_decode_tps(model, tokens, new_tokens, device, repeats):
    """Tokens after the first over their time: (n-1) / (t(n) - t(1)), as Kiln counts."""
    ids = torch.tensor([tokens], device=device)
    mask = torch.ones_like(ids)

    def generate(n):
        sync(device)
        t = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                             min_new_tokens=n, use_cache=True, pad_token_id=0)
        sync(device)
        assert out.shape[1] == len(tokens) + n, out.shape
        return time.perf_counter() - t

    generate(new_tokens)  # warm-up
    rates = []
    for _ in range(repeats):
        t1, tn = generate(1), generate(new_tokens)
        rates.append((new_tokens - 1) / max(tn - t1, 1e-9))
    return statistics.median(rates)


# ---------------------------------------------------------------- one artifact

def rel_l2(got, want):
    return (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)).item()


def check(art, kiln, device, device_arg, repeats, timing):
    row = {"model": art.name}
    manifest = json.loads((art / "manifest.json").read_text())
    kind = manifest["target"]["kind"]
    want_kind = "cuda" if device.type == "cuda" else "cpu"
    if kind != want_kind:
        row["skipped"] = f"a {kind} artifact (checking {want_kind})"
        return row
    if not (art / "config.json").is_file():
        row["skipped"] = "no Hugging Face config.json to build the reference from"
        return row
    row["target"] = manifest["target"]
    row["options"] = manifest.get("options", {})
    dtype = compute_dtype(art)
    row["compute"], row["tol"] = dtype, TOL[dtype]

    config, model = hf_model(art, device)
    narrow_weights(model, row["options"].get("weights", "f32"))
    vocab = config.vocab_size
    ctx = context_of(config)
    with tempfile.TemporaryDirectory() as tmp:
        # (a) logits, prefill and decode paths, on one fixed sequence.
        tokens = fixed_tokens(min(LOGITS_TOKENS, ctx or LOGITS_TOKENS), vocab, SEED)
        want = hf_logits(model, tokens, device)
        for feed in ("prefill", "decode"):
            got = kiln_logits(kiln, art, tokens, device_arg, feed == "decode", tmp)
            if got.shape != want.shape:
                raise RuntimeError(f"{feed} logits are {tuple(got.shape)}, "
                                   f"transformers' {tuple(want.shape)}")
            row[f"rel_l2_{feed}"] = rel_l2(got, want)
        # (a') greedy generation: the same token ids as transformers'.
        prompt = fixed_tokens(DECODE_PROMPT, vocab, SEED + 3)
        n = GREEDY_TOKENS if ctx is None else min(GREEDY_TOKENS, ctx - DECODE_PROMPT)
        kiln_ids = kiln_greedy_ids(kiln, art, prompt, n, device_arg)
        hf_ids = hf_greedy_ids(model, prompt, n, device)
        row["greedy_equal"] = kiln_ids == hf_ids
        if not row["greedy_equal"]:
            row["greedy_kiln"], row["greedy_torch"] = kiln_ids, hf_ids
        row["pass"] = row["greedy_equal"] and all(
            row[f"rel_l2_{f}"] <= row["tol"] for f in ("prefill", "decode"))
        if not timing:
            row["timing"] = "skipped: over --budget-s"
            return row

        # (b) prefill: up to 128 tokens, one token of the context left for
        # the token it produces.
        p = PREFILL_TOKENS if ctx is None else min(PREFILL_TOKENS, ctx - 1)
        prompt = fixed_tokens(p, vocab, SEED + 1)
        kiln_runs = [kiln_generate_stats(kiln, art, prompt, 1, device_arg, tmp)
                     for _ in range(repeats)]
        row["prefill_tokens"] = p
        row["kiln_prefill_ms"] = statistics.median(r["prefill_ms"] for r in kiln_runs)
        # torch's repetitions are cheap (no process start): take more.
        row["torch_prefill_ms"] = hf_prefill_ms(model, prompt, device, max(repeats, 10))

        # Decode: greedy from a short prompt, as many tokens as fit (<= 128).
        n = DECODE_TOKENS if ctx is None else min(DECODE_TOKENS, ctx - DECODE_PROMPT)
        prompt = fixed_tokens(DECODE_PROMPT, vocab, SEED + 2)
        kiln_runs = [kiln_generate_stats(kiln, art, prompt, n, device_arg, tmp)
                     for _ in range(repeats)]
        # An end-of-sequence token can stop Kiln early: time torch on as many.
        n = min(r["new_tokens"] for r in kiln_runs)
        row["decode_tokens"] = n
        row["kiln_decode_tps"] = statistics.median(r["decode_tokens_per_s"] for r in kiln_runs)
        row["torch_decode_tps"] = hf_decode_tps(model, prompt, n, device, repeats) if n > 1 else 0.0
    row["prefill_speedup"] = row["torch_prefill_ms"] / row["kiln_prefill_ms"]
    row["decode_speedup"] = (row["kiln_decode_tps"] / row["torch_decode_tps"]
                             if row["torch_decode_tps"] else float("nan"))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ---------------------------------------------------------------- report

def table(rows, header):
    lines = [
        f"Card: {header['card']} · date: {header['date']} · driver: {header['driver']} · "
        f"torch {header['torch']} · transformers {header['transformers']} · "
        f"kiln {header['kiln']} · device `{header['device']}`",
        "",
        "| model | compute | logits rel L2 prefill | logits rel L2 decode | tol | greedy ids "
        "| pass | kiln prefill ms | torch prefill ms | prefill ×torch "
        "| kiln decode tok/s | torch decode tok/s | decode ×torch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | skipped: {r['skipped']} |" + " |" * 11)
            continue
        if "error" in r:
            lines.append(f"| {r['model']} | ERROR: {r['error']} |" + " |" * 11)
            continue
        logits = (f"| {r['model']} | {r['compute']} | {r['rel_l2_prefill']:.2e} | "
                  f"{r['rel_l2_decode']:.2e} | {r['tol']:.0e} | "
                  f"{'equal' if r['greedy_equal'] else 'DIFFER'} | {'yes' if r['pass'] else 'NO'} |")
        if "timing" in r:
            lines.append(f"{logits} {r['timing']} |" + " |" * 5)
            continue
        lines.append(
            f"{logits} {r['kiln_prefill_ms']:.3f} ({r['prefill_tokens']} tok) | {r['torch_prefill_ms']:.3f} | "
            f"{r['prefill_speedup']:.2f} | {r['kiln_decode_tps']:.1f} ({r['decode_tokens']} tok) | "
            f"{r['torch_decode_tps']:.1f} | {r['decode_speedup']:.2f} |")
    lines += [
        "",
        "×torch > 1: Kiln faster. Logits: one fixed sequence of up to "
        f"{LOGITS_TOKENS} seeded tokens, Kiln (prefill, and token by token) vs transformers' "
        "forward pass in f32 on the same weights and device. Greedy ids: "
        f"{GREEDY_TOKENS} new tokens after {DECODE_PROMPT} seeded ones, `kiln-run --ids` "
        "(generation asks for `last_logits` only) vs transformers' `generate`. "
        "Kiln prefill: median of "
        f"{header['repeats']} `kiln-run` processes, each timing the generation after one warm-up; "
        "torch: median of warmed-up forward passes with the cache on. Decode: greedy from "
        f"{DECODE_PROMPT} tokens, tokens after the first over their time (torch: "
        "(n-1) / (t(generate n) - t(generate 1))).",
    ]
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("check.py: --device cuda but torch sees no CUDA device")
    # Exact f32 on both sides: no TF32 in transformers' matmuls.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    transformers.logging.set_verbosity_error()
    kiln = args.kiln_run or args.carry / "kiln-run"
    if not os.access(kiln, os.X_OK):
        sys.exit(f"check.py: no kiln-run binary at {kiln} (run scripts/gpu/prepare.sh)")
    arts = artifacts(args.carry, args.only)
    if not arts:
        sys.exit(f"check.py: no artifacts (directories with manifest.json) in {args.carry}")

    t0 = time.perf_counter()
    rows = []
    for art in arts:
        t = time.perf_counter()
        try:
            timing = time.perf_counter() - t0 < args.budget_s
            row = check(art, kiln, device, args.device, args.repeats, timing)
        except Exception as e:  # one artifact's failure must not hide the others' results
            row = {"model": art.name, "error": f"{type(e).__name__}: {e}".replace("\n", " ")}
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        brief = {k: v for k, v in row.items() if k not in ("options", "target")}
        print(f"{art.name}: {json.dumps(brief)}",
              file=sys.stderr, flush=True)

    version = json.loads((arts[0] / "manifest.json").read_text()).get("kiln_version", "?")
    header = {
        "card": card_name(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "driver": driver_version(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "kiln": version,
        "device": args.device,
        "repeats": args.repeats,
    }
    text = table(rows, header)
    print(text)
    print(f"checked {len(rows)} artifacts in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu-table.md").write_text(text)
        (Path(out) / "gpu-results.json").write_text(
            json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    checked = [r for r in rows if "skipped" not in r]
    failed = [r["model"] for r in checked if "error" in r or not r.get("pass")]
    if not checked:
        print("check.py: every artifact was skipped", file=sys.stderr)
        return 1
    if failed:
        print(f"check.py: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
