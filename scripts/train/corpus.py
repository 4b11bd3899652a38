"""The training corpus: the King James Bible as shipped by Debian.

Debian 12 (bookworm) packages used, both in `main`:
  bible-kjv-text 4.38  /usr/lib/bible.data (the compressed text)
  bible-kjv      4.38  /usr/bin/bible      (the program that reads it)
Install with `apt-get install bible-kjv` (pulls in bible-kjv-text).

The King James Version (1611) is in the public domain (outside the United
Kingdom, where the Crown's letters patent still apply); the package's
copyright file says so. The package programs are GPL-2+ but nothing of them
is copied here: we only run `bible` to print the text.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIBLE_BIN = "bible"
BIBLE_DATA = Path("/usr/lib/bible.data")
# Whole book range, printed one verse per line as "<Book><chapter>:<verse> text".
VERSE_RANGE = "gen1:1-rev22:21"
EXPECTED_VERSES = 31102
# sha256 of the printed text for bible-kjv 4.38; a different value means a
# different package version (training still works, but the model will differ).
EXPECTED_SHA256 = "cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d"

VERSE_RE = re.compile(r"^(?P<book>[1-3]?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.*)$")


@dataclass
class Chapter:
    book: str
    number: int
    verses: list[str]

    def text(self) -> str:
        return "\n".join(self.verses)


def read_kjv() -> tuple[list[Chapter], str]:
    """Return the chapters in canonical order and the sha256 of the raw text."""
    exe = shutil.which(BIBLE_BIN)
    if exe is None or not BIBLE_DATA.exists():
        sys.exit(
            "error: the training corpus comes from the Debian package bible-kjv "
            f"(program `{BIBLE_BIN}`, data {BIBLE_DATA}); install it with "
            "`apt-get install bible-kjv`."
        )
    raw = subprocess.run(
        [exe, "-f", VERSE_RANGE], check=True, capture_output=True, env={"COLUMNS": "100000"}
    ).stdout
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EXPECTED_SHA256:
        print(f"warning: corpus sha256 {digest} differs from the one the shipped model was "
              f"trained on ({EXPECTED_SHA256}); another bible-kjv version?", file=sys.stderr)
    chapters: list[Chapter] = []
    count = 0
    for lineno, line in enumerate(raw.decode("ascii").splitlines(), 1):
        if not line.strip():
            continue
        m = VERSE_RE.match(line)
        if m is None:
            sys.exit(f"error: `bible -f` line {lineno} is not '<ref> <text>': {line[:80]!r}")
        book, number = m["book"], int(m["chapter"])
        if not chapters or (chapters[-1].book, chapters[-1].number) != (book, number):
            chapters.append(Chapter(book, number, []))
        chapters[-1].verses.append(" ".join(m["text"].split()))
        count += 1
    if count != EXPECTED_VERSES:
        sys.exit(f"error: expected {EXPECTED_VERSES} verses from `bible -f {VERSE_RANGE}`, got {count}")
    return chapters, digest


def split(chapters: list[Chapter], every: int = 40) -> tuple[list[Chapter], list[Chapter]]:
    """Hold out every `every`-th chapter for validation (deterministic)."""
    train = [c for i, c in enumerate(chapters) if i % every != every // 2]
    val = [c for i, c in enumerate(chapters) if i % every == every // 2]
    return train, val
