#!/usr/bin/env python
"""Benchmark: how long the light commands take, wall clock, each in a fresh process (#25).

    python bench/bench_startup.py                      # this checkout
    python bench/bench_startup.py --src /tmp/old/src   # another source tree (e.g. `git archive main src`)

Not a test: it prints a table (and --json writes the numbers).
  help      `qwen-sft --help`
  prepare   `qwen-sft prepare --input rows.jsonl --output out.jsonl --overwrite` on 1,000 alpaca rows
  ui        `qwen-sft ui --port 0` on a workspace with one finished run: from the process's start to the first
            200 of GET / (the page) and of GET /api/runs/list, /api/models/list and /api/configs/schema (what
            the first page asks for); then whether the server process has torch loaded (its memory maps name
            libtorch), right after those answers and 5 s later
Each figure is the median of --repeat runs (min and max beside it); torch: whether that process imported it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CLI = [sys.executable, "-m", "qwen_sft.cli"]
FIRST_PAGE = ("/", "/api/runs/list", "/api/models/list", "/api/configs/schema")


def env_for(src: str | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    return env


def timed(argv: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def write_rows(path: Path, n: int = 1000) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Question {i}: what is {i} plus {i}?", "input": "",
                                "output": f"{i} plus {i} is {2 * i}."}) + "\n")


def write_workspace(ws: Path) -> None:
    """One finished run with a checkpoint: what the runs page lists (and, before #25, loaded torch to read)."""
    run = ws / "sft" / "outputs" / "training" / "r1"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoint-2" / "COMPLETE").write_text('{"step": 2}')
    (run / "metrics.json").write_text('{"train_loss": 1.0}')
    (run / "live.jsonl").write_text(json.dumps({"status": "finished", "run_name": "r1", "step": 2}) + "\n")


def torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def ui_start(env: dict, ws: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen([*CLI, "ui", "--port", "0", "--workspace", str(ws)], env=env, cwd=ws,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for line in proc.stdout:
            m = re.search(r"open (http://\S+/)", line)
            if m:
                url = m.group(1).replace("localhost", "127.0.0.1")
                break
        if url is None:
            raise RuntimeError("qwen-sft ui printed no URL")
        times = {}
        for path in FIRST_PAGE:
            while True:
                try:
                    with urllib.request.urlopen(url.rstrip("/") + path, timeout=30) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.01)
            times[path] = time.perf_counter() - start
        at_first = torch_loaded(proc.pid)
        time.sleep(5)
        return {"first_200": times["/"], "first_page": max(times.values()), "torch_at_first_page": at_first,
                "torch_after_5s": torch_loaded(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cli_torch(argv: list[str], env: dict, cwd: Path) -> bool:
    code = ("import sys, contextlib, io\nfrom qwen_sft.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        main(sys.argv[1:])\n"
            "    except SystemExit:\n        pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *argv], env=env, cwd=cwd, check=True, capture_output=True,
                         text=True).stdout
    return out.strip().splitlines()[-1] == "True"


def stats(values: list[float]) -> dict:
    return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", help="run this source tree (PYTHONPATH) instead of the installed package")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    env = env_for(args.src)
    results: dict = {"src": args.src or "installed", "python": platform.python_version(),
                     "cpus": len(os.sched_getaffinity(0)), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="qwen-sft-bench-startup-") as tmp:
        tmp = Path(tmp)
        write_rows(tmp / "rows.jsonl")
        prepare = ["prepare", "--input", "rows.jsonl", "--output", "out.jsonl", "--overwrite"]
        timed([*CLI, "--help"], env, tmp)  # warm the file cache once
        results["help"] = stats([timed([*CLI, "--help"], env, tmp) for _ in range(args.repeat)])
        results["help"]["torch"] = cli_torch(["--help"], env, tmp)
        results["prepare"] = stats([timed([*CLI, *prepare], env, tmp) for _ in range(args.repeat)])
        results["prepare"]["torch"] = cli_torch(prepare, env, tmp)
        ws = tmp / "ws"
        write_workspace(ws)
        runs = [ui_start(env, ws) for _ in range(args.repeat)]
        results["ui"] = {"first_200": stats([r["first_200"] for r in runs]),
                         "first_page": stats([r["first_page"] for r in runs]),
                         "torch_at_first_page": any(r["torch_at_first_page"] for r in runs),
                         "torch_after_5s": any(r["torch_after_5s"] for r in runs)}
    print(f"{'command':<34} {'median s':>9} {'min':>7} {'max':>7}  torch")
    for name in ("help", "prepare"):
        r = results[name]
        print(f"{name:<34} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['max_s']:>7.3f}  {r['torch']}")
    u = results["ui"]
    print(f"{'ui: first 200 of /':<34} {u['first_200']['median_s']:>9.3f} {u['first_200']['min_s']:>7.3f} "
          f"{u['first_200']['max_s']:>7.3f}  {u['torch_at_first_page']}")
    print(f"{'ui: first page (4 requests)':<34} {u['first_page']['median_s']:>9.3f} {u['first_page']['min_s']:>7.3f} "
          f"{u['first_page']['max_s']:>7.3f}  {u['torch_at_first_page']} (5 s later: {u['torch_after_5s']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
