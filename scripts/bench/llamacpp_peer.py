#!/usr/bin/env python3
"""llama.cpp as a benchmark peer: checks a GGUF against transformers, then times it.

bench.py runs this file as a separate process per measurement (so that each
process's peak RSS is its own):

  llamacpp_peer.py verify  --gguf F --model-dir D --family llama|mamba --threads T --out J
  llamacpp_peer.py measure --gguf F --prompt '[ids]' --new N --threads T --repeats R --out J
  llamacpp_peer.py stepped --gguf F --prompt '[ids]' --new N --threads T --probe-kernel K --out J

llama.cpp is driven through llama-cpp-python's low-level bindings (the C API
one to one), not its `Llama` class, which keeps that wrapper's per-token work
(sampler objects, token bookkeeping) out of the timed loop; what stays in it
is one ctypes call to llama_decode, one to llama_get_logits_ith and a numpy
argmax per token, the same greedy step the other peers time. The context gets
llama.cpp's own defaults (llama_context_default_params: mmap, n_ubatch 512)
except n_ctx, n_batch (the whole prompt in one llama_decode call),
n_threads = n_threads_batch = T and, unless `--attention default`, an f32 KV
cache with flash attention off: f32 attention like Kiln's and PyTorch's.
llama.cpp's defaults (an f16 cache, flash attention "auto", which is on for
the CPU) round attention to f16: logits rel L2 ~6e-4 on llama-small against
~5e-7 in f32.

verify: logits of every position of a fixed token sequence in one batch
(the prefill path) against transformers' logits on the same checkpoint
(relative L2 error), then greedy decoding one token at a time (the decode
path): its tokens against transformers' greedy `generate`, its logits against
transformers' logits of the same sequence. Both errors must be <= MAX_REL_L2.

measure: prefill latency (one llama_decode over the prompt with only the last
position's logits, on a cleared cache, after a warm-up) and decode tokens/s
((n-1)/(t(n)-t(1)) over n greedy tokens after that prompt, each token's time
taken after its argmax), best of R. llama.cpp's own counters
(llama_perf_context: time inside llama_decode only) are recorded next to it.

stepped: the same greedy decode with one pass of the memory-bandwidth probe
(bandwidth.Probe) before each step and after the last; each step's time and
the passes' GB/s, so that each step is set against the bandwidth of its own
moment (bench.py's stepped decode).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

# Verification thresholds (f32 on both sides; the differences are summation order).
MAX_REL_L2 = 1e-3
# With narrow weights the reference rounds the same weights, but llama.cpp's
# f16/bf16 matmuls also round the activations to that dtype: looser, and
# greedy tokens (of a random model's flat logits) may differ; that is
# reported, not a failure.
MAX_REL_L2_NARROW = 3e-2
VERIFY_TOKENS = 24
VERIFY_NEW = 8


class LlamaCppError(Exception):
    pass


class Session:
    """One llama.cpp model + context, through the C API."""

    def __init__(self, gguf: Path, n_ctx: int, threads: int, mode: str):
        import llama_cpp as lc

        self.lc = lc
        lc.llama_backend_init()
        mp = lc.llama_model_default_params()  # mmap on, as llama.cpp's tools
        self.model = lc.llama_model_load_from_file(str(gguf).encode(), mp)
        if not self.model:
            raise LlamaCppError(f"llama.cpp could not load {gguf}")
        cp = lc.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_ctx
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.no_perf = False  # keep llama_perf_context's counters
        if mode == "f32":
            # f32 attention end to end, as Kiln and PyTorch compute it. llama.cpp's
            # defaults keep K/V in f16 and its CPU flash attention rounds to f16 even
            # with an f32 cache (logits rel L2 ~6e-4 against ~5e-7 without it).
            cp.type_k = cp.type_v = lc.GGML_TYPE_F32
            cp.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        elif mode != "default":
            raise LlamaCppError(f"unknown mode {mode!r}")
        self.ctx = lc.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise LlamaCppError("llama_init_from_model failed")
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.n_past = 0
        self._one = None

    def close(self) -> None:
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)

    def clear(self) -> None:
        """Empties the KV cache / recurrent state."""
        self.lc.llama_memory_clear(self.lc.llama_get_memory(self.ctx), True)
        self.n_past = 0

    def decode(self, tokens: list[int]) -> None:
        """Appends `tokens`; logits of the last one only."""
        arr = (self.lc.llama_token * len(tokens))(*tokens)
        rc = self.lc.llama_decode(self.ctx, self.lc.llama_batch_get_one(arr, len(tokens)))
        if rc != 0:
            raise LlamaCppError(f"llama_decode returned {rc}")
        self.n_past += len(tokens)

    def decode_one(self, token: int) -> None:
        """decode([token]) with a batch made once: the per-token step of generation."""
        if self._one is None:
            self._one_tok = (self.lc.llama_token * 1)()
            self._one = self.lc.llama_batch_get_one(self._one_tok, 1)
        self._one_tok[0] = token
        rc = self.lc.llama_decode(self.ctx, self._one)
        if rc != 0:
            raise LlamaCppError(f"llama_decode returned {rc}")
        self.n_past += 1

    def decode_all_logits(self, tokens: list[int]) -> np.ndarray:
        """Appends `tokens` in one batch and returns every position's logits [n, vocab]."""
        lc, n = self.lc, len(tokens)
        batch = lc.llama_batch_init(n, 0, 1)
        try:
            for i, t in enumerate(tokens):
                batch.token[i] = t
                batch.pos[i] = self.n_past + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            batch.n_tokens = n
            rc = lc.llama_decode(self.ctx, batch)
            if rc != 0:
                raise LlamaCppError(f"llama_decode returned {rc}")
        finally:
            lc.llama_batch_free(batch)
        self.n_past += n
        rows = [np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,)).copy()
                for i in range(n)]
        return np.stack(rows)

    def last_logits(self) -> np.ndarray:
        """A view (valid until the next decode) of the last position's logits."""
        ptr = self.lc.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))


# ---------------------------------------------------------------- verify

def transformers_reference(model_dir: Path, family: str, tokens: list[int], new: int,
                           threads: int, weights: str = "f32") -> tuple[np.ndarray, list[int]]:
    """(logits [len(tokens) + new - 1, vocab], `new` greedy tokens) from transformers,
    in f32; with `weights` f16/bf16 every linear layer's and embedding's weight is
    rounded to it first."""
    import torch
    import transformers
    from transformers import LlamaForCausalLM, MambaForCausalLM

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(threads)
    cls = LlamaForCausalLM if family == "llama" else MambaForCausalLM
    model = cls.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    if weights != "f32":
        narrow = {"f16": torch.float16, "bf16": torch.bfloat16}[weights]
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
                    mod.weight.copy_(mod.weight.to(narrow).float())
    ids = torch.tensor([tokens], dtype=torch.long)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new, min_new_tokens=new,
                             bos_token_id=None, eos_token_id=None, pad_token_id=None)
        greedy = out[0, len(tokens):].tolist()
        # Logits of the prompt and of every generated token but the last, in one pass.
        logits = model(out[:, :-1]).logits[0].float().numpy()
    return logits, greedy


def verify(args) -> dict:
    vocab = json.loads((Path(args.model_dir) / "config.json").read_text())["vocab_size"]
    rng = random.Random(12345)
    tokens = [rng.randrange(vocab) for _ in range(VERIFY_TOKENS)]
    ref_logits, ref_greedy = transformers_reference(Path(args.model_dir), args.family, tokens,
                                                    VERIFY_NEW, args.threads, args.weights)
    s = Session(Path(args.gguf), n_ctx=VERIFY_TOKENS + VERIFY_NEW + 8, threads=args.threads,
                mode=args.attention)
    try:
        if s.n_vocab != vocab:
            return {"ok": False, "reason": f"GGUF vocabulary {s.n_vocab} != checkpoint's {vocab}"}
        rows = [s.decode_all_logits(tokens)]  # the prefill path: one batch
        greedy = [int(np.argmax(rows[0][-1]))]
        for _ in range(VERIFY_NEW - 1):  # the decode path: one token at a time
            s.decode_one(greedy[-1])
            rows.append(s.last_logits().copy()[None])
            greedy.append(int(np.argmax(rows[-1][0])))
    finally:
        s.close()
    logits = np.concatenate(rows).astype(np.float64)
    n = len(tokens)

    def rel_l2(a, b) -> float:
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    rel = rel_l2(logits, ref_logits)
    res = {"tokens": n, "new": VERIFY_NEW, "rel_l2": rel,
           "rel_l2_prefill": rel_l2(logits[:n], ref_logits[:n]),
           "rel_l2_decode": rel_l2(logits[n:], ref_logits[n:]),
           "max_abs": float(np.abs(logits - ref_logits).max()),
           "greedy_transformers": ref_greedy, "greedy_llama_cpp": greedy}
    problems = []
    worst = max(res["rel_l2_prefill"], res["rel_l2_decode"])
    limit = MAX_REL_L2 if args.weights == "f32" else MAX_REL_L2_NARROW
    if not worst <= limit:  # also catches NaN
        problems.append(f"logits rel L2 prefill {res['rel_l2_prefill']:.2e}, decode "
                        f"{res['rel_l2_decode']:.2e} > {limit:g}")
    res["greedy_equal"] = greedy == ref_greedy
    if greedy != ref_greedy and args.weights == "f32":
        problems.append(f"greedy tokens differ: llama.cpp {greedy}, transformers {ref_greedy}")
    res["ok"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


# ---------------------------------------------------------------- measure

def measure(args) -> dict:
    lc_prompt = json.loads(args.prompt)
    new = args.new
    s = Session(Path(args.gguf), n_ctx=len(lc_prompt) + new + 8, threads=args.threads,
                mode=args.attention)
    lc = s.lc

    def prefill() -> float:
        s.clear()
        t = time.perf_counter()
        s.decode(lc_prompt)
        int(np.argmax(s.last_logits()))
        return (time.perf_counter() - t) * 1e3

    def generate(n: int) -> tuple[float, float, list[int]]:
        """(wall-clock tok/s, llama_decode-only tok/s, tokens) for n greedy tokens."""
        s.clear()
        s.decode(lc_prompt)
        lc.llama_perf_context_reset(s.ctx)
        out = [int(np.argmax(s.last_logits()))]
        times = [time.perf_counter()]
        for _ in range(n - 1):
            s.decode_one(out[-1])
            out.append(int(np.argmax(s.last_logits())))
            times.append(time.perf_counter())
        perf = lc.llama_perf_context(s.ctx)
        if len(out) != n or perf.n_eval != n - 1:
            raise LlamaCppError(f"decoded {len(out)} tokens ({perf.n_eval} single-token evals), asked {n}")
        wall = (n - 1) / (times[-1] - times[0]) if n > 1 else 0.0
        inner = (n - 1) / (perf.t_eval_ms / 1e3) if n > 1 and perf.t_eval_ms > 0 else 0.0
        return wall, inner, out

    result = {}
    try:
        prefill()  # warm-up
        result["prefill_ms"] = min(prefill() for _ in range(args.repeats))
        if new > 1:
            generate(min(new, 8))  # warm-up
            runs = [generate(new) for _ in range(args.repeats)]
            best = max(runs, key=lambda r: r[0])
            result["decode_tok_s"] = best[0]
            result["decode_tok_s_in_llama_decode"] = max(r[1] for r in runs)
            result["tokens"] = best[2]
    finally:
        s.close()
    return result


def stepped(args) -> dict:
    """Greedy decode with one bandwidth.Probe pass before each step and one
    after the last (after a warm-up generation): each step's time (llama_decode
    and argmax) and the passes' GB/s. A process of its own, so that the probe's
    array stays out of `measure`'s peak RSS."""
    import bandwidth

    lc_prompt = json.loads(args.prompt)
    s = Session(Path(args.gguf), n_ctx=len(lc_prompt) + args.new + 8, threads=args.threads,
                mode=args.attention)
    try:
        with bandwidth.Probe(args.threads, args.probe_kernel) as probe:
            for timed in (False, True):
                s.clear()
                s.decode(lc_prompt)
                out = [int(np.argmax(s.last_logits()))]
                step_ms, gbps = [], [probe.pass_gbps()]
                for _ in range(args.new - 1 if timed else min(args.new, 8)):
                    t = time.perf_counter()
                    s.decode_one(out[-1])
                    out.append(int(np.argmax(s.last_logits())))
                    step_ms.append((time.perf_counter() - t) * 1e3)
                    gbps.append(probe.pass_gbps())
    finally:
        s.close()
    return {"step_ms": step_ms, "gbps": gbps, "tokens": out}


def library_version() -> dict:
    import llama_cpp

    info = {"llama_cpp_python": llama_cpp.__version__}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["verify", "measure", "stepped", "version"])
    ap.add_argument("--gguf")
    ap.add_argument("--model-dir")
    ap.add_argument("--family", choices=["llama", "mamba"])
    ap.add_argument("--prompt")
    ap.add_argument("--new", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--attention", choices=["f32", "default"], default="f32",
                    help="f32: f32 KV cache, no flash attention (default here); default: "
                         "llama.cpp's own (f16 KV cache, flash attention auto)")
    ap.add_argument("--weights", choices=["f32", "f16", "bf16"], default="f32",
                    help="verify: the GGUF's linear layers are stored in this dtype")
    ap.add_argument("--probe-kernel",
                    help="stepped: the read kernel of the bandwidth probe run between steps")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.mode == "verify":
        res = verify(args)
    elif args.mode == "measure":
        res = measure(args)
    elif args.mode == "stepped":
        res = stepped(args)
    else:
        res = library_version()
    text = json.dumps(res)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
