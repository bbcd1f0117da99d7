#!/usr/bin/env python
"""Loading a Qwen tokenizer: the garbage collector paused or not, and a saved folder with or without the added
tokens in tokenizer_config.json, side by side in one process, best of --repeats interleaved.

    python bench/bench_tokenizer.py                  # ~1 min on 2 cores
    python bench/bench_tokenizer.py --held 0         # in a process that holds nothing else

Not a test. Each load parses the files again (data.tokenizer._load_tokenizer, below its cache). --held N: the
process first keeps N tokenizers loaded, as a UI server or a run that trains and evaluates does (the cost of a
collection grows with what the process holds).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

from qwen_sft.assets import qwen3_tokenizer_dir
from qwen_sft.data import tokenizer as T


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--held", type=int, default=3, help="tokenizers kept loaded first (default 3)")
    args = ap.parse_args()

    src = str(qwen3_tokenizer_dir())
    held = [T._load_tokenizer(src, False) for _ in range(args.held)]
    work = Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))
    try:
        saved, legacy = work / "saved", work / "without-added-tokens"
        T.save_tokenizer(held[0] if held else T._load_tokenizer(src, False), saved)
        shutil.copytree(saved, legacy)  # as transformers 5 alone saves it: no added_tokens_decoder
        tc = json.loads((legacy / "tokenizer_config.json").read_text())
        del tc["added_tokens_decoder"]
        (legacy / "tokenizer_config.json").write_text(json.dumps(tc))

        def load(folder, paused: bool):
            with nullcontext() if paused else mock.patch.object(T, "gc_paused", nullcontext):
                T._load_tokenizer(str(folder), False)

        cases = [("published folder", src), ("saved, no added tokens", legacy), ("saved by qwen-sft", saved)]
        rows = []
        for name, folder in cases:  # interleaved: each pair measured back to back
            on = best_of(args.repeats, lambda f=folder: load(f, paused=False))
            off = best_of(args.repeats, lambda f=folder: load(f, paused=True))
            rows.append((name, on, off))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{platform.processor() or platform.machine()}, {len(held)} tokenizer(s) held, best of {args.repeats}")
    print(f"{'folder':<26}{'gc on (s)':>11}{'gc paused (s)':>15}{'ratio':>8}")
    for name, on, off in rows:
        print(f"{name:<26}{on:>11.2f}{off:>15.2f}{on / off:>7.2f}x")
    before, after = rows[1][1], rows[2][2]
    print(f"a saved folder, before (no added tokens, gc on) -> after: {before:.2f} s -> {after:.2f} s, "
          f"{before / after:.2f}x")


if __name__ == "__main__":
    main()
