#!/usr/bin/env python3
"""Kiln against its peers on the CPU, in one run, on the same weights and threads.

Usage (from the repository root; see scripts/bench/README.md):

  .venv-py/bin/python scripts/bench/bench.py [--models llama134m,llama-small,mamba130m,mamba-tiny]
                                             [--threads 2] [--quick] [--repeats 1] [--rounds 1]
                                             [--weights f32|f16|bf16] [--json OUT]

For every model: a random-initialized Hugging Face checkpoint is created once
(seeded, f32, `save_pretrained`, cached in scripts/bench/cache/models/), then

  Kiln     `kiln compile --model DIR --out ART`, then `kiln-run ART --tokens ... --ids
           --temperature 0 --warmup 1 --threads T --stats-json F`;
  PyTorch  the same checkpoint with transformers, torch.set_num_threads(T): a prefill
           forward pass (last position's logits only, as generation needs) and greedy
           `generate` with the KV cache (or Mamba's recurrent cache);
  llama.cpp only if `import llama_cpp, gguf` works (optional; see the README): an f32
           GGUF of the same checkpoint (gguf_export.py), checked against transformers'
           logits and greedy tokens first (llamacpp_peer.py verify; a model that fails
           is not timed), then timed through the C API (llamacpp_peer.py measure).

Measured: prefill latency at two prompt lengths, decode tokens/s over N new
tokens after the shorter prompt ((n-1) tokens over the time after the first),
and each process's peak RSS (GNU /usr/bin/time, one process per measurement).
The machine's memory read bandwidth is measured in the same run
(bandwidth.py) before, in each decode round and after, and decode is shown
as a fraction of the bandwidth limit: (weight bytes read per token) / (the
most bytes/s on T threads measured in the run). With --rounds, decode is also
printed round by round, with Kiln/llama.cpp per round (paired: the same
machine state) and its median. Every decode round also runs a stepped decode
of Kiln and llama.cpp: one pass of a bandwidth probe (bandwidth.Probe) between
steps, each step set against the passes either side of it, since this VM's
bandwidth changes within seconds (see the README).

With --weights f16 (or bf16) every peer stores the linear layers' weights and
the embedding in that dtype, and the rows are named MODEL/f16: Kiln `kiln
compile --weights f16` (weights rounded once at load, f32 activations and
accumulation); llama.cpp a GGUF with those matrices in f16 (its matmuls round
the activations to f16 too);
PyTorch the checkpoint loaded with that torch dtype (all compute in it). The
bandwidth limit then counts those matrices at 2 bytes per value.

The checkpoints carry no BOS/EOS/PAD token, so generation never stops early.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = HERE / "cache"
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import bandwidth  # noqa: E402
import gguf_export  # noqa: E402

PEER = HERE / "llamacpp_peer.py"

NO_SPECIAL_TOKENS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "llama" or "mamba"
    config: dict
    seed: int


MODELS = {
    # The shape of issue 6: 134M parameters, 438 MB of weights read per token.
    "llama134m": ModelSpec("llama", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
        intermediate_size=2048, vocab_size=32000, max_position_embeddings=2048,
        tie_word_embeddings=False, rms_norm_eps=1e-5, **NO_SPECIAL_TOKENS), seed=1),
    "llama-small": ModelSpec("llama", dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=688, vocab_size=4096, max_position_embeddings=2048,
        tie_word_embeddings=False, rms_norm_eps=1e-5, **NO_SPECIAL_TOKENS), seed=2),
    # The shape of mamba-130m.
    "mamba130m": ModelSpec("mamba", dict(
        hidden_size=768, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4,
        vocab_size=50280, layer_norm_epsilon=1e-5, **NO_SPECIAL_TOKENS), seed=3),
    "mamba-tiny": ModelSpec("mamba", dict(
        hidden_size=256, num_hidden_layers=4, state_size=16, expand=2, conv_kernel=4,
        vocab_size=4096, layer_norm_epsilon=1e-5, **NO_SPECIAL_TOKENS), seed=4),
}


# ---------------------------------------------------------------- checkpoints

def ensure_checkpoint(name: str, spec: ModelSpec) -> Path:
    """The cached checkpoint of `name`, created (seeded) if missing or stale."""
    d = CACHE / "models" / name
    stamp = d / "bench-spec.json"
    want = json.dumps({"family": spec.family, "config": spec.config, "seed": spec.seed},
                      sort_keys=True)
    if stamp.exists() and stamp.read_text() == want and (d / "config.json").exists():
        return d
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM

    transformers.logging.set_verbosity_error()
    print(f"[{name}] creating a random {spec.family} checkpoint in {d}", flush=True)
    if d.exists():
        shutil.rmtree(d)
    torch.manual_seed(spec.seed)
    if spec.family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**spec.config))
    else:
        model = MambaForCausalLM(MambaConfig(**spec.config))
    model.to(torch.float32).eval().save_pretrained(d)
    stamp.write_text(want)
    return d


def safetensors_index(d: Path) -> dict[str, int]:
    """Tensor name -> bytes, read from the safetensors headers only."""
    sizes = {}
    for f in sorted(d.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                sizes[k] = v["data_offsets"][1] - v["data_offsets"][0]
    return sizes


# Checkpoint names of the matrices `--weights f16|bf16` stores narrow
# (linear layers, the output head, the embedding), as Kiln's `--weights` does.
NARROW_SUFFIXES = ("_proj.weight", "lm_head.weight", "embed_tokens.weight", "embeddings.weight")


def bytes_per_token(d: Path, weights: str = "f32") -> tuple[int, int]:
    """(all weight bytes, weight bytes one decode step must read).

    A decode step reads every weight once, except the input embedding table, of
    which it reads one row; when the output projection is tied to the embedding
    the table is read whole as the output projection. KV-cache reads are not
    counted (small at these lengths next to the weights). With narrow weights
    those matrices count 2 bytes per value."""
    sizes = safetensors_index(d)
    if weights != "f32":
        for k in sizes:
            if k.endswith(NARROW_SUFFIXES):
                sizes[k] //= 2
    total = sum(sizes.values())
    embed = [k for k in sizes if k.endswith(("embed_tokens.weight", "embeddings.weight"))]
    untied = "lm_head.weight" in sizes
    read = total - (sum(sizes[k] for k in embed) if untied else 0)
    return total, read


# ---------------------------------------------------------------- processes

def run_measured(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, int | None]:
    """Runs `cmd` to completion; returns its result and its peak RSS in bytes.

    The peak comes from GNU time (`/usr/bin/time -f %M`), not from this
    process's wait4: Linux carries the pre-exec address space's high-water mark
    into the child's ru_maxrss, so a child forked from this Python process (with
    torch loaded) would report this process's size. None if GNU time is absent."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        full = cmd
        if Path("/usr/bin/time").exists():
            full = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] + cmd
        res = subprocess.run(full, capture_output=True, text=True, **kw)
        rss = None
        if rss_file.exists():
            lines = rss_file.read_text().split()
            rss = int(lines[-1]) * 1024 if lines and lines[-1].isdigit() else None
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res, rss


def prompt_ids(vocab: int, n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(n)]


# ---------------------------------------------------------------- Kiln

def kiln_binaries(build: bool) -> tuple[Path, Path]:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"
    kiln, run = target / "kiln", target / "kiln-run"
    if build or not (kiln.exists() and run.exists()):
        print(f"building kiln and kiln-run (release) into {target}", flush=True)
        subprocess.run(["cargo", "build", "--release", "-p", "kiln", "-p", "kiln-runtime",
                        "--bin", "kiln", "--bin", "kiln-run"], cwd=REPO, check=True)
    return kiln, run


def kiln_compile(kiln: Path, name: str, d: Path, weights: str) -> tuple[Path, float]:
    art = CACHE / "artifacts" / (name if weights == "f32" else f"{name}-{weights}")
    t = time.perf_counter()
    run_measured([str(kiln), "compile", "--model", str(d), "--out", str(art),
                  "--weights", weights])
    return art, time.perf_counter() - t


def kiln_run_cmd(run: Path, art: Path, prompt: list[int], new: int, threads: int,
                 stats_file: Path, output: str) -> list[str]:
    """Greedy `kiln-run` after one warm-up generation, its statistics to
    `stats_file`; `output` is `--ids` or `--lockstep`."""
    return [str(run), str(art), "--tokens", ",".join(map(str, prompt)),
            "--max-new-tokens", str(new), "--temperature", "0", output, "--warmup", "1",
            "--threads", str(threads), "--stats-json", str(stats_file)]


def kiln_generate(run: Path, art: Path, prompt: list[int], new: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stats_file = Path(tmp) / "stats.json"
        _, rss = run_measured(kiln_run_cmd(run, art, prompt, new, threads, stats_file, "--ids"))
        stats = json.loads(stats_file.read_text())
    if stats["new_tokens"] != new:
        raise RuntimeError(f"kiln-run produced {stats['new_tokens']} tokens, asked {new}")
    return {"prefill_ms": stats["prefill_ms"], "decode_tok_s": stats["decode_tokens_per_s"],
            "peak_rss": rss}


def kiln_stepped(run: Path, art: Path, prompt: list[int], new: int, threads: int,
                 probe: bandwidth.Probe) -> dict:
    """Greedy decode in lockstep with the bandwidth probe (`kiln-run
    --lockstep`): one probe pass after each token, before the next step. Each
    step's forward time (kiln-run's own clock) and the passes' GB/s."""
    with tempfile.TemporaryDirectory() as tmp:
        stats_file = Path(tmp) / "stats.json"
        proc = subprocess.Popen(
            kiln_run_cmd(run, art, prompt, new, threads, stats_file, "--lockstep"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1)
        tokens, gbps = [], []
        for line in proc.stdout:
            tokens.append(int(line))
            gbps.append(probe.pass_gbps())
            proc.stdin.write("\n")
            proc.stdin.flush()
            if len(tokens) == new:
                break
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0 or len(tokens) != new:
            raise RuntimeError(f"kiln-run --lockstep: {len(tokens)} of {new} tokens, exit "
                               f"{proc.returncode}:\n{err[-3000:]}")
        stats = json.loads(stats_file.read_text())
    return {"step_ms": stats["decode_step_ms"], "gbps": gbps, "tokens": tokens}


# ---------------------------------------------------------------- PyTorch

def torch_worker(args: argparse.Namespace) -> None:
    """Runs in its own process (so its peak RSS is its own): one prompt length."""
    import inspect

    import torch
    import transformers
    from transformers import (LlamaForCausalLM, MambaForCausalLM, StoppingCriteria,
                              StoppingCriteriaList)

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    cls = LlamaForCausalLM if args.family == "llama" else MambaForCausalLM
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.weights]
    model = cls.from_pretrained(args.model_dir, dtype=dtype, local_files_only=True).eval()
    prompt = torch.tensor([json.loads(args.prompt)], dtype=torch.long)
    mask = torch.ones_like(prompt)
    fwd_kw = {"use_cache": True}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        fwd_kw["logits_to_keep"] = 1

    class Clock(StoppingCriteria):
        """Called once after every new token: records when it was produced."""

        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kw):
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    def prefill() -> float:
        t = time.perf_counter()
        model(prompt, attention_mask=mask, **fwd_kw)
        return (time.perf_counter() - t) * 1e3

    def generate(new: int) -> float:
        clock = Clock()
        out = model.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=new,
                             min_new_tokens=new, stopping_criteria=StoppingCriteriaList([clock]),
                             **NO_SPECIAL_TOKENS)
        n = out.shape[1] - prompt.shape[1]
        if n != new or len(clock.times) != n:
            raise RuntimeError(f"generate produced {n} tokens ({len(clock.times)} timed), asked {new}")
        return (n - 1) / (clock.times[-1] - clock.times[0]) if n > 1 else 0.0

    result = {}
    with torch.inference_mode():
        prefill()  # warm-up
        result["prefill_ms"] = min(prefill() for _ in range(args.repeats))
        if args.new > 1:
            generate(min(args.new, 8))  # warm-up
            result["decode_tok_s"] = max(generate(args.new) for _ in range(args.repeats))
    Path(args.out).write_text(json.dumps(result))


def torch_generate(d: Path, family: str, prompt: list[int], new: int, threads: int,
                   repeats: int, weights: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.json"
        _, rss = run_measured([
            sys.executable, __file__, "--torch-worker", "--model-dir", str(d), "--family", family,
            "--prompt", json.dumps(prompt), "--new", str(new), "--threads", str(threads),
            "--repeats", str(repeats), "--weights", weights, "--out", str(out)])
        res = json.loads(out.read_text())
    res["peak_rss"] = rss
    return res


# ---------------------------------------------------------------- llama.cpp

def llama_cpp_available() -> bool:
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def llama_cpp_peer(mode: str, *opts: str) -> tuple[dict, int | None]:
    """Runs llamacpp_peer.py MODE in a process of its own; (its JSON, its peak RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lc.json"
        _, rss = run_measured([sys.executable, str(PEER), mode, *opts, "--out", str(out)])
        return json.loads(out.read_text()), rss


def llama_cpp_prepare(name: str, d: Path, family: str, threads: int,
                      attention: str, weights: str) -> tuple[Path | None, dict]:
    """The model's GGUF and its verification against transformers.

    Returns (gguf, verify result); gguf is None when the model must not be
    timed: the export failed, llama.cpp could not run it, or its logits or
    greedy tokens differ from transformers'."""
    try:
        out = CACHE / "gguf" / (f"{name}.gguf" if weights == "f32" else f"{name}-{weights}.gguf")
        if not gguf_export.is_current(d, out, weights):
            print(f"[{name}] writing a GGUF ({weights} weights) of the checkpoint to {out}",
                  flush=True)
        gguf = gguf_export.ensure_gguf(d, out, weights)
    except gguf_export.ExportError as e:
        return None, {"ok": False, "reason": f"GGUF export failed: {e}"}
    try:
        res, _ = llama_cpp_peer("verify", "--gguf", str(gguf), "--model-dir", str(d),
                                "--family", family, "--threads", str(threads),
                                "--attention", attention, "--weights", weights)
    except RuntimeError as e:
        return None, {"ok": False, "reason": f"verification did not run: {e}"}
    return (gguf if res.get("ok") else None), res


# ---------------------------------------------------------------- the table

def speed_ratio(kiln, peer, higher_is_better: bool):
    if kiln is None or peer is None or kiln == 0 or peer == 0:
        return None
    return kiln / peer if higher_is_better else peer / kiln


def fmt(v, spec=".1f", suffix=""):
    return "—" if v is None else f"{v:{spec}}{suffix}"


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


#: A step is in the fast phase when both probe passes around it read at
#: least this many times the median pass.
FAST_PHASE = 1.35


def stepped_summary(r: dict, peer: str) -> dict | None:
    """A peer's stepped decodes over all rounds: each step's read rate as a
    fraction of the probe passes either side of it (bandwidth.stepped_fractions)."""
    rounds = r.get(peer, {}).get("stepped_rounds", [])
    if not rounds:
        return None
    fr, ms, gb, around = [], [], [], []
    for st in rounds:
        fr += bandwidth.stepped_fractions(st["step_ms"], st["gbps"], r["bytes_per_token"])
        ms += st["step_ms"]
        gb += st["gbps"]
        around += [min(a, b) for a, b in zip(st["gbps"], st["gbps"][1:])]
    # The fast phase: steps with both passes around them well above the
    # median pass (this VM's bandwidth flips between ~33 and ~60 GB/s).
    fast_from = FAST_PHASE * median(gb)
    fast = sorted(f for f, lo in zip(fr, around) if lo >= fast_from)
    fr.sort()
    q = lambda x: fr[min(len(fr) - 1, int(x * len(fr)))]  # noqa: E731
    return {"frac": median(fr), "p25": q(0.25), "p75": q(0.75), "step_ms": median(ms),
            "gbps": median(gb), "gbps_lo": min(gb), "gbps_hi": max(gb), "steps": len(fr),
            "fast_from": fast_from, "fast_steps": len(fast),
            "fast_frac": median(fast) if fast else None}



def limit_text(r: dict, gbps: float, kv, pv, lv) -> str:
    """Decode as a fraction of the bandwidth limit. With rounds: each round's
    decode against the bandwidth measured at the start of that round (median
    over rounds), then the best decode against the most measured in the run."""
    per_token = r["bytes_per_token"]
    bws = r.get("bandwidth_rounds_gbps", [])
    most = max([gbps] + bws)
    limit = most * 1e9 / per_token
    best = (f"best vs the run's most, {most:.1f} GB/s = {limit:.0f} tok/s: "
            f"Kiln {fmt(kv and kv / limit * 100, '.0f', '%')}, "
            f"PyTorch {fmt(pv and pv / limit * 100, '.0f', '%')}, "
            f"llama.cpp {fmt(lv and lv / limit * 100, '.0f', '%')}")
    def rounds(peer: str) -> str:
        rates = r.get(peer, {}).get("decode_rounds", [])
        if len(rates) != len(bws) or not bws:
            return "-"
        return f"{median([x * per_token / (b * 1e9) for x, b in zip(rates, bws)]) * 100:.0f}%"
    ks, ls = stepped_summary(r, "kiln"), stepped_summary(r, "llama_cpp")
    if ks:
        best = (f"stepped median: Kiln {ks['frac'] * 100:.0f}%, llama.cpp "
                f"{fmt(ls and ls['frac'] * 100, '.0f', '%')}; {best}")
    if len(bws) < 2:
        return best
    return (f"median of rounds vs their own bandwidth: Kiln {rounds('kiln')}, "
            f"PyTorch {rounds('pytorch')}, llama.cpp {rounds('llama_cpp')}; {best}")


def print_table(results: dict, bw: dict, threads: int) -> None:
    gbps = bw[str(threads)]["sustained_gbps"]
    print()
    kernels = ", ".join(f"{t}: {b['kernel']}{' huge pages' if b.get('huge_pages') else ''}"
                        for t, b in bw.items())
    def runs(t):
        b = bw[t].get("sustained_before_after_gbps")
        return f"; before/after {b[0]:.1f}/{b[1]:.1f}" if b else ""
    multi = (f", {threads} threads {gbps:.1f} GB/s (best pass {bw[str(threads)]['best_gbps']:.1f}"
             f"{runs(str(threads))})" if threads != 1 else "")
    print(f"memory read bandwidth (best kernel's median pass): 1 thread "
          f"{bw['1']['sustained_gbps']:.1f} GB/s (best pass {bw['1']['best_gbps']:.1f}{runs('1')})"
          f"{multi} ({kernels})")
    head = (f"{'model':<14} {'metric':<16} {'Kiln':>9} {'PyTorch':>9} {'llama.cpp':>9} "
            f"{'K vs PT':>8} {'K vs lc':>8}  bandwidth limit")
    print(head)
    print("-" * len(head) + "-" * 14)
    for name, r in results.items():
        k, pt, lc = r["kiln"], r["pytorch"], r.get("llama_cpp", {})
        rows = [(f"prefill {n} ms", f"prefill{n}_ms", False) for n in r["prompt_lengths"]]
        rows += [("decode tok/s", "decode_tok_s", True), ("peak RSS MiB", "peak_rss_mib", None)]
        for label, key, higher in rows:
            kv, pv, lv = k.get(key), pt.get(key), lc.get(key)
            if higher is None:  # memory: plain ratio Kiln/peer, lower is better
                rp = None if kv is None or not pv else kv / pv
                rl = None if kv is None or not lv else kv / lv
            else:
                rp, rl = speed_ratio(kv, pv, higher), speed_ratio(kv, lv, higher)
            extra = ""
            if key == "decode_tok_s":
                extra = "  " + limit_text(r, gbps, kv, pv, lv)
            print(f"{name:<14} {label:<16} {fmt(kv):>9} {fmt(pv):>9} {fmt(lv):>9} "
                  f"{fmt(rp, '.2f', '×'):>8} {fmt(rl, '.2f', '×'):>8}{extra}")
    print("K vs PT / K vs lc: speed ratio (>1: Kiln faster) for latency and tok/s; "
          "Kiln/peer for peak RSS (<1: Kiln smaller).")
    print("bandwidth limit: weight bytes read per token over the read bandwidth. With rounds, "
          "each round measures it before its decodes, and each peer's decode in a round is "
          "set against that round's (median over rounds shown); the best decode is also set "
          "against the most bandwidth measured anywhere in the run (before, rounds, after).")
    for name, r in results.items():
        ks, ls = r["kiln"].get("decode_rounds", []), r.get("llama_cpp", {}).get("decode_rounds", [])
        bws = r.get("bandwidth_rounds_gbps", [])
        if len(ks) > 1:
            line = f"{name}: decode tok/s by round: Kiln " + \
                ", ".join(f"{x:.1f}" for x in ks)
            if len(ls) == len(ks):
                ratios = sorted(k / l for k, l in zip(ks, ls))
                med = median(ratios)
                line += (f"; llama.cpp " + ", ".join(f"{x:.1f}" for x in ls) +
                         f"; Kiln/llama.cpp per round " +
                         ", ".join(f"{k / l:.2f}" for k, l in zip(ks, ls)) +
                         f" (median {med:.2f}, lowest {ratios[0]:.2f})")
            if len(bws) == len(ks):
                line += "; bandwidth GB/s " + ", ".join(f"{b:.1f}" for b in bws)
                # Each round's decode against the bandwidth measured just before it.
                frac = [k * r["bytes_per_token"] / (b * 1e9) for k, b in zip(ks, bws)]
                line += (f"; Kiln at {', '.join(f'{f * 100:.0f}%' for f in frac)} of its "
                         f"round's bandwidth (median {median(frac) * 100:.0f}%)")
            print(line)
    for name, r in results.items():
        ks, ls = stepped_summary(r, "kiln"), stepped_summary(r, "llama_cpp")
        if not ks:
            continue
        def peer(label, x):
            return (f"{label} median step {x['step_ms']:.2f} ms at {x['frac'] * 100:.0f}% of its "
                    f"bandwidth (quartiles {x['p25'] * 100:.0f}-{x['p75'] * 100:.0f}%; {x['steps']} "
                    f"steps; probe {x['gbps']:.1f} GB/s median, {x['gbps_lo']:.1f}-"
                    f"{x['gbps_hi']:.1f}; fast phase, both passes >= {x['fast_from']:.1f} GB/s: "
                    f"{x['fast_steps']} steps, median "
                    f"{fmt(x['fast_frac'] and x['fast_frac'] * 100, '.0f', '%')})")
        line = f"{name}: stepped decode: " + peer("Kiln", ks)
        if ls:
            line += (f"; {peer('llama.cpp', ls)}; Kiln/llama.cpp at equal bandwidth "
                     f"{ks['frac'] / ls['frac']:.2f}×")
        print(line)
    print("stepped decode: greedy decode with one pass of the bandwidth probe before every "
          "step and after the last (kiln-run --lockstep; llamacpp_peer.py stepped); each step's "
          "weight bytes over its time, against the higher of the two passes around it. At equal "
          "bandwidth: the ratio of the peers' median fractions.")
    for name, r in results.items():
        v = r.get("llama_cpp_verify")
        if not v:
            continue
        if v.get("ok"):
            greedy = (f"{v['new']} greedy tokens equal" if v.get("greedy_equal", True) else
                      f"greedy tokens differ (narrow activations): llama.cpp "
                      f"{v['greedy_llama_cpp']}, transformers {v['greedy_transformers']}")
            print(f"llama.cpp {name}: GGUF checked against transformers: logits rel L2 "
                  f"{v['rel_l2_prefill']:.1e} over {v['tokens']} prompt positions (one batch), "
                  f"{v['rel_l2_decode']:.1e} over {v['new'] - 1} decode steps; {greedy}")
        else:
            print(f"llama.cpp {name}: NOT TIMED: {v.get('reason')}")
        if r.get("llama_cpp", {}).get("error"):
            print(f"llama.cpp {name}: measurement failed: {r['llama_cpp']['error']}")


# ---------------------------------------------------------------- main

def keep_best(into: dict, n: int, decode: bool, m: dict) -> None:
    """Keeps the lowest prefill time and (for the decode prompt) the highest rate."""
    key = f"prefill{n}_ms"
    into[key] = min(into.get(key, float("inf")), m["prefill_ms"])
    if decode:
        into["decode_tok_s"] = max(into.get("decode_tok_s", 0.0), m["decode_tok_s"])


def keep_stepped(into: dict, st: dict, per_token: int, name: str, peer: str, tag: str) -> None:
    """Records a stepped decode (step times and the probe passes around them)."""
    st.pop("tokens", None)
    into.setdefault("stepped_rounds", []).append(st)
    f = bandwidth.stepped_fractions(st["step_ms"], st["gbps"], per_token)
    print(f"[{name}] {peer} stepped{tag}: median step {median(st['step_ms']):.2f} ms, "
          f"probe median {median(st['gbps']):.1f} GB/s, median step at "
          f"{median(f) * 100:.0f}% of its bandwidth", flush=True)


def bench_model(name: str, args, kiln_bins) -> dict:
    spec = MODELS[name]
    d = ensure_checkpoint(name, spec)
    total, per_token = bytes_per_token(d, args.weights)
    vocab = spec.config["vocab_size"]
    lengths = [32, 128] if args.quick else [128, 1024]
    new = 16 if args.quick else 128
    print(f"[{name}] weights {total / 1e6:.0f} MB, {per_token / 1e6:.0f} MB read per decoded token",
          flush=True)
    r = {"bytes_total": total, "bytes_per_token": per_token, "prompt_lengths": lengths,
         "new_tokens": new, "kiln": {}, "pytorch": {}, "llama_cpp": {}}
    gguf = None
    if args.llama_cpp:
        gguf, r["llama_cpp_verify"] = llama_cpp_prepare(name, d, spec.family, args.threads,
                                                        args.llama_cpp_attention, args.weights)
        v = r["llama_cpp_verify"]
        if gguf is None:
            print(f"[{name}] llama.cpp: not timed: {v.get('reason')}", flush=True)
        else:
            print(f"[{name}] llama.cpp: GGUF matches transformers (logits rel L2 prefill "
                  f"{v['rel_l2_prefill']:.1e}, decode {v['rel_l2_decode']:.1e}; greedy "
                  f"{v['greedy_llama_cpp']})", flush=True)

    kiln, run = kiln_bins
    art, secs = kiln_compile(kiln, name, d, args.weights)
    r["kiln"]["compile_s"] = secs
    print(f"[{name}] kiln compile {secs:.1f} s", flush=True)
    peaks = {"kiln": [], "pytorch": [], "llama_cpp": []}
    for i, n in enumerate(lengths):
        prompt = prompt_ids(vocab, n, seed=n)
        # The first (shorter) prompt also times decode; longer ones only prefill.
        steps = new if i == 0 else 1
        # Rounds alternate the peers, so that each sees the machine in the same
        # states (on a shared VM memory bandwidth drifts between ~35 and ~60
        # GB/s on two threads); each keeps its best over the rounds.
        for rnd in range(args.rounds):
            tag = f" (round {rnd + 1}/{args.rounds})" if args.rounds > 1 else ""
            if i == 0:
                # The bandwidth this round's decodes see (it drifts): the
                # limit is the most measured in the run.
                bw_round = bandwidth.measure(args.threads, mib=512, repeats=5, cache=CACHE)
                r["bandwidth_rounds_gbps"] = r.get("bandwidth_rounds_gbps", []) + [
                    bw_round[str(args.threads)]["sustained_gbps"]]
            best = None
            for _ in range(args.repeats):
                m = kiln_generate(run, art, prompt, steps, args.threads)
                peaks["kiln"].append(m["peak_rss"])
                best = m if best is None else {
                    **best,
                    "prefill_ms": min(best["prefill_ms"], m["prefill_ms"]),
                    "decode_tok_s": max(best["decode_tok_s"], m["decode_tok_s"])}
            keep_best(r["kiln"], n, i == 0, best)
            if i == 0:
                r["kiln"].setdefault("decode_rounds", []).append(best["decode_tok_s"])
            print(f"[{name}] kiln    prompt {n}{tag}: {best}", flush=True)
            if i == 0:
                with bandwidth.Probe(args.threads, args.probe_kernel) as probe:
                    st = kiln_stepped(run, art, prompt, steps, args.threads, probe)
                keep_stepped(r["kiln"], st, r["bytes_per_token"], name, "kiln", tag)
            m = torch_generate(d, spec.family, prompt, steps, args.threads, args.repeats,
                               args.weights)
            peaks["pytorch"].append(m["peak_rss"])
            keep_best(r["pytorch"], n, i == 0, m)
            if i == 0:
                r["pytorch"].setdefault("decode_rounds", []).append(m["decode_tok_s"])
            print(f"[{name}] pytorch prompt {n}{tag}: {m}", flush=True)
            if gguf is not None and "error" not in r["llama_cpp"]:
                try:
                    m, rss = llama_cpp_peer("measure", "--gguf", str(gguf), "--prompt",
                                            json.dumps(prompt), "--new", str(steps),
                                            "--threads", str(args.threads),
                                            "--repeats", str(args.repeats),
                                            "--attention", args.llama_cpp_attention)
                except RuntimeError as e:
                    r["llama_cpp"] = {"error": str(e)}
                    print(f"[{name}] llama.cpp prompt {n}: failed: {e}", flush=True)
                    continue
                peaks["llama_cpp"].append(rss)
                keep_best(r["llama_cpp"], n, i == 0, m)
                if i == 0:
                    r["llama_cpp"].setdefault("decode_rounds", []).append(m["decode_tok_s"])
                    r["llama_cpp"]["decode_tok_s_in_llama_decode"] = max(
                        r["llama_cpp"].get("decode_tok_s_in_llama_decode", 0.0),
                        m["decode_tok_s_in_llama_decode"])
                m.pop("tokens", None)
                print(f"[{name}] llama.cpp prompt {n}{tag}: {m}", flush=True)
                if i == 0:
                    st, _ = llama_cpp_peer("stepped", "--gguf", str(gguf), "--prompt",
                                           json.dumps(prompt), "--new", str(steps),
                                           "--threads", str(args.threads),
                                           "--attention", args.llama_cpp_attention,
                                           "--probe-kernel", args.probe_kernel)
                    keep_stepped(r["llama_cpp"], st, r["bytes_per_token"], name, "llama.cpp",
                                 tag)
    if "error" in r["llama_cpp"]:
        peaks["llama_cpp"] = []
    for peer, v in peaks.items():
        known = [x for x in v if x is not None]
        if known or peer != "llama_cpp":
            r[peer]["peak_rss_mib"] = max(known) / 2**20 if known else None
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama134m,llama-small,mamba130m,mamba-tiny",
                    help=f"comma-separated, from: {', '.join(MODELS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: prompts of 32 and 128 tokens, 16 new tokens")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the peers this many times per prompt, best kept (default 1)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed runs per measurement (after a warm-up); the best is kept")
    ap.add_argument("--build", action="store_true", help="cargo build --release kiln first")
    ap.add_argument("--llama-cpp-attention", choices=["f32", "default"], default="f32",
                    help="llama.cpp's attention: f32 (f32 KV cache, no flash attention: the "
                         "same arithmetic as the others; default) or llama.cpp's defaults "
                         "(f16 KV cache, flash attention)")
    ap.add_argument("--weights", choices=["f32", "f16", "bf16"], default="f32",
                    help="every peer stores the linear layers' weights in this dtype "
                         "(default f32; see above)")
    ap.add_argument("--json", type=Path, help="also write all results here")
    ap.add_argument("--table", type=Path, metavar="JSON",
                    help="print the table of an earlier run's --json file and exit")
    # Internal: the PyTorch measurement process.
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--family", help=argparse.SUPPRESS)
    ap.add_argument("--prompt", help=argparse.SUPPRESS)
    ap.add_argument("--new", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        saved = json.loads(args.table.read_text())
        print_table(saved["results"], saved["bandwidth"], saved["threads"])
        return
    if args.torch_worker:
        torch_worker(args)
        return

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    if args.threads < 1 or args.repeats < 1 or args.rounds < 1:
        ap.error("--threads, --repeats and --rounds must be at least 1")

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    kiln_bins = kiln_binaries(args.build)
    print("measuring memory bandwidth ...", flush=True)
    bw = bandwidth.measure(args.threads, mib=1024, repeats=10, cache=CACHE)
    # The stepped decodes' probe runs the kernel that read the most.
    args.probe_kernel = bw[str(args.threads)]["kernel"]
    args.llama_cpp = llama_cpp_available()
    lc_version = None
    if not args.llama_cpp:
        print("llama.cpp: not installed (pip install llama-cpp-python gguf — ~10 min build); "
              "its columns stay empty", flush=True)
    else:
        try:
            lc_version, _ = llama_cpp_peer("version")
            print(f"llama.cpp: llama-cpp-python {lc_version['llama_cpp_python']}; "
                  f"{lc_version.get('system_info', '')}", flush=True)
        except RuntimeError as e:
            args.llama_cpp = False
            print(f"llama.cpp: installed but does not run; its columns stay empty: {e}", flush=True)
    results = {(name if args.weights == "f32" else f"{name}/{args.weights}"):
               bench_model(name, args, kiln_bins) for name in names}
    # Again at the end: on a shared VM the bandwidth drifts; the limit is
    # the higher of the two sustained rates (the most the machine read).
    print("measuring memory bandwidth again ...", flush=True)
    bw_after = bandwidth.measure(args.threads, mib=1024, repeats=10, cache=CACHE)
    for t, after in bw_after.items():
        before = bw[t]
        bw[t] = max(before, after, key=lambda b: b["sustained_gbps"])
        bw[t]["sustained_before_after_gbps"] = [before["sustained_gbps"], after["sustained_gbps"]]
    load_after = os.getloadavg()

    print_table(results, bw, args.threads)
    if args.llama_cpp:
        print("llama.cpp attention: " + (
            "f32 (f32 KV cache, flash attention off)" if args.llama_cpp_attention == "f32"
            else "llama.cpp's defaults (f16 KV cache, flash attention auto)"))
    machine = f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"date {started:%Y-%m-%d %H:%M} UTC; machine {machine}; threads {args.threads}; "
          f"{'quick' if args.quick else 'full'}; load average before "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after "
          f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": started.isoformat(), "machine": machine, "threads": args.threads,
            "quick": args.quick, "load_before": load_before, "load_after": load_after,
            "bandwidth": bw, "llama_cpp": lc_version, "weights": args.weights,
            "llama_cpp_attention": args.llama_cpp_attention if args.llama_cpp else None,
            "results": results}, indent=2))


if __name__ == "__main__":
    main()
