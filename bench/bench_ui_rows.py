#!/usr/bin/env python
"""Benchmark: the data page's row view of a large file (`qwen-sft ui`, #16), against reading the file whole.

    python bench/bench_ui_rows.py                  # 100,000 rows (about 40 MB of JSONL), a few seconds
    python bench/bench_ui_rows.py --rows 1000000

Not a test: it prints a table (and --json writes the numbers). Both sides are measured in this process, through
the UI's own endpoints (Starlette's TestClient: the server's code without the network), on a file it writes:
sample rows (qwen_sft.samples) repeated with their number, so every row is different.

  ours    GET /api/data/rows?file=F&start=S&count=50: the row index (built on the first open of the file: one pass
          over its bytes for the line ends) and the 50 rows of the page read by their byte ranges, parsed and
          encoded with the training encoder. Then later pages (the index cached), the last row's token view
          (/api/data/row), and the text search of the whole file (/api/data/search).
  whole   what a page costs when the file is read whole first (LlamaBoard's preview does that): load_dataset
          of the file, then the same 50 rows encoded.

The tokenizer is loaded before the clock starts (the server keeps it; its first load is printed apart).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

PAGE = 50


def write_rows(path: Path, n: int) -> int:
    from qwen_sft.samples import generate_samples

    base = generate_samples(1000, seed=0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = json.loads(json.dumps(base[i % len(base)]))
            if "messages" in row:  # the row's number in its first user turn: every row differs
                first = next(m for m in row["messages"] if m["role"] == "user")
                first["content"] += f" (#{i})"
            else:
                row["instruction"] += f" (#{i})"
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path.stat().st_size


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args()

    from starlette.testclient import TestClient

    from qwen_sft.data.encode import EncodeOptions, encode
    from qwen_sft.data.formats import load_dataset
    from qwen_sft.ui.application import create_app
    from qwen_sft.ui.context import Settings
    from qwen_sft.ui.server import allowed_hosts

    ws = Path(tempfile.mkdtemp(prefix="bench-ui-rows-"))
    (ws / "data").mkdir()
    data = ws / "data" / "big.jsonl"
    size = write_rows(data, args.rows)
    (ws / "data" / "small.jsonl").write_text(data.open(encoding="utf-8").readline())
    client = TestClient(
        create_app(Settings(workspace=ws, port=7870, allowed_hosts=allowed_hosts("127.0.0.1", 7870, []))),
        base_url="http://127.0.0.1:7870",
    )

    def get(path: str, **params) -> dict:
        r = client.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    tok_s, _ = timed(lambda: get("/api/data/rows", file="data/small.jsonl"))  # loads the tokenizer (kept by the server)
    first_s, page = timed(lambda: get("/api/data/rows", file="data/big.jsonl", start=0, count=PAGE))
    assert page["total"] == args.rows and len(page["rows"]) == PAGE and all(r["ok"] for r in page["rows"])
    later = []
    for start in (PAGE, args.rows // 2, args.rows - PAGE):
        later.append(
            timed(lambda s=start: get("/api/data/rows", file="data/big.jsonl", start=s, count=PAGE), repeats=3)[0]
        )
    row_s, row = timed(lambda: get("/api/data/row", file="data/big.jsonl", index=args.rows - 1), repeats=3)
    assert row["where"] == f"data/big.jsonl:{args.rows}" and row["tokens"]

    def search():
        with client.stream(
            "GET", "/api/data/search", params={"file": "data/big.jsonl", "q": f"(#{args.rows - 1})"}
        ) as r:
            return r.read().decode()
    search_s, events = timed(search)
    assert f'"matches": 1, "total": {args.rows}' in events

    from qwen_sft.assets import qwen3_tokenizer_dir
    from qwen_sft.data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(qwen3_tokenizer_dir("hybrid")))

    def whole():
        convs = load_dataset(str(data)).conversations
        return [encode(c, tok, EncodeOptions()) for c in convs[:PAGE]]
    whole_s, _ = timed(whole)

    results = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, {platform.processor() or '?'}",
        "python": sys.version.split()[0],
        "rows": args.rows,
        "file_mb": round(size / 2**20, 1),
        "tokenizer_first_load_s": round(tok_s, 3),
        "first_open_s": round(first_s, 3),
        "later_page_s_median": round(statistics.median(later), 3),
        "later_page_s_max": round(max(later), 3),
        "row_view_s": round(row_s, 3),
        "search_whole_file_s": round(search_s, 3),
        "read_whole_then_page_s": round(whole_s, 3),
    }
    print(f"{args.rows} rows, {results['file_mb']} MiB of JSONL; page = {PAGE} rows encoded")
    print(f"  {'tokenizer, first load (kept by the server)':48s} {tok_s:8.3f} s")
    print(f"  {'ours: first open (index build + one page)':48s} {first_s:8.3f} s")
    print(f"  {'ours: a later page (median of 3 places)':48s} {statistics.median(later):8.3f} s")
    print(f"  {'ours: one row token by token (the last row)':48s} {row_s:8.3f} s")
    print(f"  {'ours: text search of the whole file':48s} {search_s:8.3f} s")
    print(f"  {'whole: load_dataset of the file, then a page':48s} {whole_s:8.3f} s")
    print(f"  first open, whole / ours: {whole_s / first_s:.1f}x; target under 1 s: "
          f"{'met' if first_s < 1 else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
