#!/usr/bin/env python3
"""Writes an f32 GGUF (llama.cpp's format) of a cached benchmark checkpoint.

Usage:  python scripts/bench/gguf_export.py MODEL_DIR OUT.gguf [--weights f16|bf16]

With --weights f16 or bf16 the matrices of the linear layers, the output head
and the embedding table are stored in that dtype, rounded to nearest even, as
Kiln's `--weights` stores them; norms, biases, convolution and SSM tensors
stay f32.

MODEL_DIR is a Hugging Face checkpoint as bench.py caches it (config.json and
model.safetensors, f32) of a LlamaForCausalLM or MambaForCausalLM. Every
tensor of the checkpoint is mapped to its llama.cpp name, converted to f32 and
written unchanged except for two layout changes llama.cpp expects:

- Llama: the rows of q_proj and k_proj are permuted within each head. HF's
  Llama applies RoPE in the "rotate half" form (dimension i is paired with
  i + head_dim/2); llama.cpp's `llama` architecture pairs adjacent dimensions
  (2i, 2i+1). Reordering the projection rows so that row i -> 2i and row
  i + head_dim/2 -> 2i + 1 makes the two forms compute the same attention
  scores (q.k is unchanged by a common permutation of both).
- Mamba: `A_log` is stored as A = -exp(A_log) (tensor `ssm_a`), and the
  depthwise conv weight [d_inner, 1, d_conv] loses its middle axis.

The checkpoints have no tokenizer (the benchmark feeds token ids), so the
vocabulary is llama.cpp's "none" tokenizer model with `<arch>.vocab_size`
set: llama.cpp then creates that many empty tokens and never tokenizes.

A tensor of the checkpoint that has no mapping, or an expected tensor that is
missing, is an error: a partly converted model must not load.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

# Bumped whenever the written file would change for the same checkpoint, so
# that bench.py's cache notices.
EXPORTER_VERSION = 3

# GGUF names of the matrices a `--weights f16|bf16` export stores narrow.
LINEAR = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
          "ssm_in", "ssm_x", "ssm_dt", "ssm_out"}


def is_linear(gguf_name: str) -> bool:
    """A matrix `--weights f16|bf16` stores narrow: linear layers, head, embedding."""
    parts = gguf_name.split(".")
    if gguf_name in ("output.weight", "token_embd.weight"):
        return True
    return len(parts) == 4 and parts[0] == "blk" and parts[2] in LINEAR and parts[3] == "weight"


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """f32 values as bf16 bits (uint16), rounded to nearest even (finite inputs)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


class ExportError(Exception):
    pass


def load_checkpoint(model_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir}: no *.safetensors file")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return config, tensors


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of one q/k projection from HF's rotate-half order to adjacent pairs.

    Within each head of `head_dim` rows, row j (j < head_dim/2) goes to 2j and
    row j + head_dim/2 goes to 2j + 1."""
    rows = w.shape[0]
    if rows % n_head or (rows // n_head) % 2:
        raise ExportError(f"cannot permute {w.shape} for {n_head} heads (odd head size)")
    half = rows // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class Mapper:
    """Collects (gguf name, array) pairs and checks every source tensor is used once."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.src = tensors
        self.used: set[str] = set()
        self.out: list[tuple[str, np.ndarray]] = []

    def take(self, name: str) -> np.ndarray:
        if name not in self.src:
            raise ExportError(f"checkpoint has no tensor {name!r}")
        if name in self.used:
            raise ExportError(f"tensor {name!r} mapped twice")
        self.used.add(name)
        return self.src[name]

    def put(self, gguf_name: str, a: np.ndarray) -> None:
        self.out.append((gguf_name, np.ascontiguousarray(a, dtype=np.float32)))

    def finish(self) -> list[tuple[str, np.ndarray]]:
        left = sorted(set(self.src) - self.used)
        if left:
            raise ExportError(f"checkpoint tensors with no GGUF mapping: {left}")
        return self.out


def llama_tensors(cfg: dict, m: Mapper) -> None:
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    m.put("token_embd.weight", m.take("model.embed_tokens.weight"))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        m.put(b + "attn_norm.weight", m.take(p + "input_layernorm.weight"))
        m.put(b + "attn_q.weight", rope_permute(m.take(p + "self_attn.q_proj.weight"), n_head))
        m.put(b + "attn_k.weight", rope_permute(m.take(p + "self_attn.k_proj.weight"), n_kv))
        m.put(b + "attn_v.weight", m.take(p + "self_attn.v_proj.weight"))
        m.put(b + "attn_output.weight", m.take(p + "self_attn.o_proj.weight"))
        m.put(b + "ffn_norm.weight", m.take(p + "post_attention_layernorm.weight"))
        m.put(b + "ffn_gate.weight", m.take(p + "mlp.gate_proj.weight"))
        m.put(b + "ffn_up.weight", m.take(p + "mlp.up_proj.weight"))
        m.put(b + "ffn_down.weight", m.take(p + "mlp.down_proj.weight"))
    m.put("output_norm.weight", m.take("model.norm.weight"))
    # Tied checkpoints have no lm_head: llama.cpp then uses token_embd.
    if "lm_head.weight" in m.src:
        m.put("output.weight", m.take("lm_head.weight"))


def mamba_tensors(cfg: dict, m: Mapper) -> None:
    m.put("token_embd.weight", m.take("backbone.embeddings.weight"))
    for i in range(cfg["num_hidden_layers"]):
        p = f"backbone.layers.{i}."
        x = p + "mixer."
        b = f"blk.{i}."
        m.put(b + "attn_norm.weight", m.take(p + "norm.weight"))
        m.put(b + "ssm_in.weight", m.take(x + "in_proj.weight"))
        conv = m.take(x + "conv1d.weight")
        if conv.ndim != 3 or conv.shape[1] != 1:
            raise ExportError(f"{x}conv1d.weight: expected [d_inner, 1, d_conv], got {conv.shape}")
        m.put(b + "ssm_conv1d.weight", conv[:, 0, :])
        m.put(b + "ssm_conv1d.bias", m.take(x + "conv1d.bias"))
        m.put(b + "ssm_x.weight", m.take(x + "x_proj.weight"))
        m.put(b + "ssm_dt.weight", m.take(x + "dt_proj.weight"))
        m.put(b + "ssm_dt.bias", m.take(x + "dt_proj.bias"))
        # llama.cpp names these without a ".weight" suffix.
        m.put(b + "ssm_a", -np.exp(m.take(x + "A_log").astype(np.float64)))
        m.put(b + "ssm_d", m.take(x + "D"))
        m.put(b + "ssm_out.weight", m.take(x + "out_proj.weight"))
    m.put("output_norm.weight", m.take("backbone.norm_f.weight"))
    if "lm_head.weight" in m.src:
        m.put("output.weight", m.take("lm_head.weight"))


def llama_metadata(w, cfg: dict) -> None:
    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    rope = cfg.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or cfg.get("rope_scaling"):
        raise ExportError(f"only plain RoPE is supported, config has {rope or cfg.get('rope_scaling')}")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ExportError("Llama checkpoints with biases are not supported")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(cfg.get("num_key_value_heads") or n_head)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))


def mamba_metadata(w, cfg: dict) -> None:
    d_model = cfg["hidden_size"]
    d_inner = cfg.get("intermediate_size") or cfg.get("expand", 2) * d_model
    dt_rank = cfg.get("time_step_rank", "auto")
    if dt_rank == "auto":
        dt_rank = -(-d_model // 16)
    if d_inner != 2 * d_model:
        raise ExportError(f"llama.cpp's mamba needs d_inner = 2 * d_model, got {d_inner} and {d_model}")
    if cfg.get("use_bias"):
        raise ExportError("Mamba checkpoints with in/out projection biases are not supported")
    if not cfg.get("use_conv_bias", True):
        raise ExportError("Mamba checkpoints without a conv bias are not supported")
    w.add_context_length(2**20)  # no positional limit; llama.cpp still wants the key
    w.add_embedding_length(d_model)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(0)  # required keys that Mamba does not use
    w.add_head_count(0)
    w.add_ssm_conv_kernel(cfg.get("conv_kernel", 4))
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(cfg.get("state_size", 16))
    w.add_ssm_time_step_rank(dt_rank)
    w.add_ssm_dt_b_c_rms(False)
    w.add_layer_norm_rms_eps(float(cfg.get("layer_norm_epsilon", 1e-5)))


def export(model_dir: Path, out: Path, weights: str = "f32") -> None:
    import gguf

    if weights not in ("f32", "f16", "bf16"):
        raise ExportError(f"weights must be f32, f16 or bf16, not {weights!r}")

    cfg, tensors = load_checkpoint(model_dir)
    arch = {"LlamaForCausalLM": "llama", "MambaForCausalLM": "mamba"}.get(
        (cfg.get("architectures") or [None])[0])
    if arch is None:
        raise ExportError(f"{model_dir}: unsupported architectures {cfg.get('architectures')}")
    m = Mapper(tensors)
    (llama_tensors if arch == "llama" else mamba_tensors)(cfg, m)
    mapped = m.finish()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_name(model_dir.name)
    (llama_metadata if arch == "llama" else mamba_metadata)(w, cfg)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_tokenizer_model("none")
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "bf16": gguf.LlamaFileType.MOSTLY_BF16}[weights])
    for name, a in mapped:
        if weights == "f32" or not is_linear(name):
            w.add_tensor(name, a)
        elif weights == "f16":
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, bf16_bits(a), raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)


def _stamp(model_dir: Path, weights: str) -> str:
    """What `out` was made from: this exporter's version, the checkpoint's identity
    and the weights' dtype."""
    spec = model_dir / "bench-spec.json"
    return json.dumps({"exporter": EXPORTER_VERSION, "weights": weights,
                       "checkpoint": spec.read_text() if spec.exists() else None,
                       "weights_mtime": [f.stat().st_mtime_ns for f in sorted(model_dir.glob("*.safetensors"))]},
                      sort_keys=True)


def is_current(model_dir: Path, out: Path, weights: str = "f32") -> bool:
    stamp = out.with_suffix(".json")
    return out.exists() and stamp.exists() and stamp.read_text() == _stamp(model_dir, weights)


def ensure_gguf(model_dir: Path, out: Path, weights: str = "f32") -> Path:
    """`out`, (re)written unless it was made from the same checkpoint, weight dtype and
    exporter version."""
    if not is_current(model_dir, out, weights):
        export(model_dir, out, weights)
        out.with_suffix(".json").write_text(_stamp(model_dir, weights))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--weights", choices=["f32", "f16", "bf16"], default="f32",
                    help="dtype of the linear layers' matrices (default f32)")
    args = ap.parse_args()
    try:
        export(args.model_dir, args.out, args.weights)
    except ExportError as e:
        raise SystemExit(f"gguf_export: {e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
