#!/usr/bin/env bash
# Installs everything Kiln needs on a fresh Debian 12 (x86_64) machine:
#   - LLVM/MLIR 22 and a C toolchain from Debian's archive (bookworm-security),
#   - Rust via rustup if cargo is missing,
#   - ptxas from the PyPI wheel nvidia-cuda-nvcc-cu12 into .venv-ptxas/, so the
#     PTX Kiln emits is validated on machines without a GPU.
# Idempotent: re-running it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(llvm-22-dev libmlir-22-dev mlir-22-tools libclang-22-dev clang-22
              zlib1g-dev libzstd-dev libpolly-22-dev build-essential pkg-config
              python3 python3-venv curl ca-certificates)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing Rust (rustup, stable)" >&2
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

PTXAS_GLOB=".venv-ptxas/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas"
# shellcheck disable=SC2086
if ! ls $PTXAS_GLOB >/dev/null 2>&1; then
  echo "setup: installing ptxas (PyPI nvidia-cuda-nvcc-cu12) into .venv-ptxas" >&2
  python3 -m venv .venv-ptxas
  .venv-ptxas/bin/pip install -q --no-deps "nvidia-cuda-nvcc-cu12==12.9.*"
fi
echo "setup: done (LLVM 22 at /usr/lib/llvm-22; ptxas: $(ls $PTXAS_GLOB))" >&2
