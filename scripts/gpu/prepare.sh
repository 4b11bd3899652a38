#!/usr/bin/env bash
# Builds what the GPU check carries to a machine with an NVIDIA GPU, Python and
# torch but no Rust: the release `kiln-run`, an artifact per golden config
# (tests/golden: Llama and Mamba) and of the embedded default model, and
# check.py, all in one directory (default gpu-carry/, ignored by git).
#
#   scripts/gpu/prepare.sh [--target cuda|cpu] [--arch sm_90|sm_80] [--out DIR]
#
# Then, on the GPU machine:  python3 DIR/check.py --carry DIR --device cuda
# (see docs/gpu-runs.md). `--target cpu` builds CPU artifacts instead, to run
# the same check here: python3 DIR/check.py --carry DIR --device cpu.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=cuda
ARCH=sm_90 # H100 and H200 are both sm_90
OUT=gpu-carry
while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET="$2"; shift 2 ;;
    --arch) ARCH="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "prepare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$TARGET" in cuda|cpu) ;; *) echo "prepare.sh: --target cuda or cpu" >&2; exit 2 ;; esac

# The whole working tree travels with the carry directory, 64 MiB in all.
LIMIT_MIB=64
CARRY_LIMIT_MIB=60

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
echo "prepare: building kiln-run (release) and kiln" >&2
cargo build --release -q -p kiln-runtime --bin kiln-run
cargo build -q --bin kiln
KILN="$TARGET_DIR/debug/kiln"
KILN_RUN="$TARGET_DIR/release/kiln-run"

rm -rf "$OUT"
mkdir -p "$OUT"
compile() { # name, model spec, more kiln options
  local args=(compile --model "$2" --target "$TARGET" --out "$OUT/$1" "${@:3}")
  if [ "$TARGET" = cuda ]; then args+=(--arch "$ARCH"); fi
  "$KILN" "${args[@]}"
}
for dir in tests/golden/*/; do
  [ -f "$dir/config.json" ] || continue
  compile "$(basename "$dir")" "$dir"
done
compile default default
# Weights stored narrow (matmuls of an f16/bf16 operand, gathers of f16/bf16
# rows): an untied Llama and one whose head is its embedding.
compile llama-mqa-odd-w-bf16 tests/golden/llama-mqa-odd --weights bf16
compile llama-gqa-tied-w-f16 tests/golden/llama-gqa-tied --weights f16

cp "$KILN_RUN" "$OUT/kiln-run"
strip "$OUT/kiln-run" 2>/dev/null || true
cp scripts/gpu/check.py "$OUT/check.py"

mib() { echo $(( ($1 + 1048575) / 1048576 )); }
carry_bytes=$(du -sb "$OUT" | cut -f1)
# What travels besides: tracked files and untracked ones git does not ignore.
tree_bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
  | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
echo "prepare: $OUT holds $(find "$OUT" -name manifest.json | wc -l) artifacts," \
  "$(mib "$carry_bytes") MiB; with the working tree ($(mib "$tree_bytes") MiB)" \
  "$(mib $((carry_bytes + tree_bytes))) MiB of ${LIMIT_MIB}" >&2
if [ "$carry_bytes" -gt $((CARRY_LIMIT_MIB * 1048576)) ] \
  || [ $((carry_bytes + tree_bytes)) -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "prepare: too large to carry (carry <= ${CARRY_LIMIT_MIB} MiB, with the tree <= ${LIMIT_MIB} MiB)" >&2
  exit 1
fi
