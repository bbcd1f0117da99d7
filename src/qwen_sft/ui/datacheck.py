"""The data page's check, run as a job: `python -m qwen_sft.ui.datacheck --result R --tokenizer T --name N
[key=value ...] -- FILE ...`, in the workspace.

It is `qwen-sft check`'s own code (config.load_config, dataset.encode_all, report.check_thresholds and
format_report) with what a page needs on top: every problem, not the first 20 (the rows are read with
skip_invalid off first, which lists them all, as the CLI does; then with skip_invalid on for the report of
the rows that remain), and the encoded lengths binned for a histogram against cutoff_len. One JSON result
file, written when done; `progress: i/n stage` lines on stdout for the page.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from ..fileio import write_text

BINS = 24
STAGES = 4


def progress(i: int, text: str) -> None:
    print(f"progress: {i}/{STAGES} {text}", flush=True)


def histogram(lengths: list[int], cutoff_len: int) -> dict:
    """Counts of rows by encoded length in BINS equal bins over [0, top]: top is cutoff_len (a row cut there has
    exactly cutoff_len tokens: the last bin holds the truncated rows), or the longest row when every row is
    shorter than half of cutoff_len (the bars would be one thin line at the left otherwise)."""
    longest = max(lengths, default=0)
    top = cutoff_len if 2 * longest > cutoff_len else max(longest, BINS)
    width = max(1, math.ceil(top / BINS))
    counts = [0] * math.ceil(top / width)
    for n in lengths:
        counts[min((n - 1) // width if n else 0, len(counts) - 1)] += 1
    return {"width": width, "counts": counts, "top": top, "cutoff_len": cutoff_len,
            "at_cutoff": sum(1 for n in lengths if n >= cutoff_len), "max": longest}


def run(files: list[str], tokenizer: str, name: str, overrides: list[str]) -> dict:
    from ..config import load_config
    from ..data.dataset import encode_all
    from ..data.report import check_thresholds, format_report
    from ..errors import DataError
    from ..data.tokenizer import load_tokenizer

    progress(0, "loading the tokenizer")
    tok = load_tokenizer(tokenizer)
    cfg = load_config(None, [f"dataset={json.dumps(files)}", f"model_name_or_path={name}", *overrides])
    progress(1, "reading and encoding the rows")
    problems: list[str] = []
    try:
        rows, report = encode_all(dataclasses.replace(cfg, skip_invalid=False), tok)
    except DataError as e:  # every invalid row, named file:line (a whole-file problem stops here)
        problems = e.problems
        progress(2, f"{len(problems)} problem(s); encoding the rows that remain")
        try:
            rows, report = encode_all(dataclasses.replace(cfg, skip_invalid=True), tok)
        except DataError:
            return {"problems": problems, "report": None, "failed": [], "skip_invalid": cfg.skip_invalid}
    progress(3, "report")
    failed = check_thresholds(report, cfg)
    if problems and not cfg.skip_invalid:
        failed.insert(0, f"{len(problems)} invalid row(s) stop training (fix them, or set skip_invalid: true to "
                         "drop them, counted in the report)")
    return {"problems": problems, "report": report, "report_text": format_report(report), "failed": failed,
            "histogram": histogram([len(r.input_ids) for r in rows], cfg.cutoff_len), "skip_invalid": cfg.skip_invalid}


def main(argv: list[str] | None = None) -> int:
    from ..errors import UserError

    p = argparse.ArgumentParser(prog="python -m qwen_sft.ui.datacheck")
    p.add_argument("--result", required=True)
    p.add_argument("--tokenizer", required=True, help="a tokenizer directory")
    p.add_argument("--name", required=True, help="the model's name in messages")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--files", nargs="+", required=True)
    args = p.parse_args(argv)
    try:
        result = run(args.files, args.tokenizer, args.name, args.overrides)
    except UserError as e:
        print(f"error: {e}", flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("cancelled", flush=True)
        return 130
    write_text(Path(args.result), json.dumps(result, ensure_ascii=False))
    progress(STAGES, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
