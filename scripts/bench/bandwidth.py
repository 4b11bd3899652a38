#!/usr/bin/env python3
"""Memory read bandwidth of this machine, measured by a STREAM-like read kernel.

stream_read.c is compiled at run time with `cc -O3 -march=native` (so the
loop uses the host's widest vector loads) into the benchmark's cache dir, then
run on 1 thread and on N threads over an array far larger than the last-level
cache. Each run repeats the pass several times and keeps the best.

Usage:  python scripts/bench/bandwidth.py [--threads N] [--mib 1024] [--repeats 10]
Prints one JSON object: {"1": {...}, "N": {...}} with best_gbps per thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "stream_read.c"
DEFAULT_CACHE = HERE / "cache"


def build(cache: Path) -> Path:
    """Compiles the kernel unless an up-to-date binary is already cached."""
    cache.mkdir(parents=True, exist_ok=True)
    exe = cache / "stream_read"
    if not exe.exists() or exe.stat().st_mtime < SOURCE.stat().st_mtime:
        subprocess.run(
            ["cc", "-O3", "-march=native", "-pthread", "-o", str(exe), str(SOURCE)],
            check=True,
        )
    return exe


def measure(threads: int, mib: int = 1024, repeats: int = 10, cache: Path = DEFAULT_CACHE) -> dict:
    """Read bandwidth on 1 thread and on `threads` threads; GB/s = 1e9 bytes/s."""
    exe = build(cache)
    results = {}
    for t in sorted({1, threads}):
        out = subprocess.run(
            [str(exe), str(mib), str(t), str(repeats)],
            check=True, capture_output=True, text=True,
        ).stdout
        results[str(t)] = json.loads(out)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--mib", type=int, default=1024, help="array size in MiB (make it >> L3)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args()
    print(json.dumps(measure(args.threads, args.mib, args.repeats, args.cache), indent=2))


if __name__ == "__main__":
    main()
