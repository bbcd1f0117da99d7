#!/usr/bin/env python
"""Data at scale: encoding throughput, the cached start of a training run, and its memory, at 10k and 1M rows.

    python bench/bench_data.py                       # 1,000,000 rows: ~20-30 min on 2 cores
    python bench/bench_data.py --rows 50000          # a quick look
    python bench/bench_data.py --only sample --repeats 3   # the side-by-side encode only, best of 3 interleaved
    python bench/bench_data.py --only verify         # the checksums of a 1M-row entry, checked on open (~1 min)

Not a test: it prints a table and writes results.json into --workdir. Phases, each in its own process (so
each peak RSS is its own; the encoding workers' peak is reported separately):

  1. generate --rows sample rows (prepare --format sample's generator, 10k-row blocks of seeds 0, 1, ...) as JSONL;
     the first --sample_rows of them are the side-by-side sample, the first 10,000 the small run.
  2. today's single-process path on the sample: every row loaded, encode() in order into Python lists,
     build_report (what data/dataset.encode_all did before the cache); its rows' digest.
  3. ours on the sample with 1 worker, then with --workers: time, rows/s, speedup and speedup per core, and the
     rows' digest, which must equal (2)'s (the bench stops otherwise).
  4. ours on all --rows with --workers: the first encode into a fresh cache.
  5. `qwen-sft train` on the tiny Qwen3 stand-in, max_steps=1, cache warm, at 10k and at --rows rows: wall time
     from process start to exit (an upper bound of start-to-first-step: it includes the step and saving the
     adapter), and the training process's peak RSS (metrics.json's peak_memory_gb, ru_maxrss).
  6. (also --only verify) what checking an entry's CRC-32s costs each time it is opened (#23): opening the
     --rows entry with and without the check, best of 3, warm page cache. --only verify writes an entry of the
     1M-row run's shape instead of encoding one (121 tokens and 420 bytes of row text a row, random tokens: the
     check reads bytes, whatever they hold), in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
BLOCK = 10_000


def rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def cpu_s(who=resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def generate(path: Path, rows: int) -> None:
    from qwen_sft.samples import generate_samples

    with open(path, "w", encoding="utf-8") as f:
        for seed, start in enumerate(range(0, rows, BLOCK)):
            for r in generate_samples(min(BLOCK, rows - start), seed=seed):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def head(src: Path, dst: Path, rows: int) -> None:
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i == rows:
                break
            out.write(line)


def config(args, dataset: Path, **over):
    from qwen_sft.config import build_config

    return build_config(
        {
            "model_name_or_path": str(args.model),
            "dataset": str(dataset),
            "data_cache_dir": str(args.cache),
            "cutoff_len": 4096,
            **over,
        }
    )


def rows_digest(ids_chunks, label_chunks, lengths) -> str:
    """The digest RowWriter computes (data/rowstore.py), here over rows held in memory."""
    import numpy as np

    h = {k: hashlib.sha256() for k in ("input_ids", "labels", "lengths")}
    for ids, labels in zip(ids_chunks, label_chunks):
        h["input_ids"].update(np.asarray(ids, dtype="<i4").tobytes())
        h["labels"].update(np.asarray(labels, dtype="<i4").tobytes())
    h["lengths"].update(np.asarray(lengths, dtype=np.int64).tobytes())
    return hashlib.sha256("".join(x.hexdigest() for x in h.values()).encode()).hexdigest()


# ---------------------------------------------------------------- child phases (one process each)


def child_today(args) -> dict:
    """data/dataset.encode_all before the cache: load every row, encode in order, report from lists."""
    from qwen_sft.data import cache
    from qwen_sft.data.encode import EncodeOptions, encode
    from qwen_sft.data.formats import load_dataset
    from qwen_sft.data.report import build_report
    from qwen_sft.data.tokenizer import load_tokenizer

    cfg = config(args, args.dataset)
    tok = load_tokenizer(cfg.model_name_or_path)
    started, cpu0 = time.perf_counter(), cpu_s()
    loaded = load_dataset(cfg.dataset, cfg.data_format, skip_invalid=cfg.skip_invalid)
    opts = EncodeOptions(cutoff_len=cfg.cutoff_len, enable_thinking=cache.encode_options(cfg, tok).enable_thinking,
                         train_on=cfg.train_on)
    kept, dropped = [], []
    for conv in loaded.conversations:
        enc = encode(conv, tok, opts)
        seqs = [e for e in [enc] + enc.more if e.num_trained]  # a row's sequences, as the cache keeps them
        for k, e in enumerate(seqs):
            e.continues_row = k > 0
        kept += seqs
        if not seqs:
            dropped.append(enc)
    build_report(loaded, kept, [], cfg.cutoff_len)
    seconds, cpu = time.perf_counter() - started, cpu_s() - cpu0
    digest = rows_digest([e.input_ids for e in kept], [e.labels for e in kept], [len(e.input_ids) for e in kept])
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "rows": len(loaded.conversations),
        "digest": digest,
        "peak_rss_mb": rss_mb(),
    }


def child_ours(args) -> dict:
    from qwen_sft.data import cache
    from qwen_sft.data.formats import expand_paths
    from qwen_sft.data.tokenizer import load_tokenizer

    cfg = config(args, args.dataset)
    tok = load_tokenizer(cfg.model_name_or_path)
    paths = expand_paths(cfg.dataset)
    started, cpu0, kids0 = time.perf_counter(), cpu_s(), cpu_s(resource.RUSAGE_CHILDREN)
    fields = cache.key_fields(cfg, tok, paths)
    entry = args.cache / cache.key_of(fields)
    store = cache.build(cfg, tok, paths, None, fields, entry, args.workers, log=lambda m: print(m, file=sys.stderr))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_s": cpu_s() - cpu0,
        "workers_cpu_s": cpu_s(resource.RUSAGE_CHILDREN) - kids0,
        "rows": store.report["rows_read"],
        "digest": store.meta["rows_sha256"],
        "workers": store.meta["workers"],
        "peak_rss_mb": rss_mb(),
        "workers_peak_rss_mb": rss_mb(resource.RUSAGE_CHILDREN),
        "cache_mb": sum(p.stat().st_size for p in entry.iterdir()) / 2**20,
    }


def synthetic_entry(path: Path, rows: int) -> Path:
    """An entry of the 1M-row run's shape (docs/benchmarks.md): 121 tokens and 420 bytes of row text a row."""
    import numpy as np

    from qwen_sft.data.report import encoded_flags
    from qwen_sft.data.rowstore import RowWriter

    rng = np.random.default_rng(0)
    writer = RowWriter(path, encoded_flags(), {"key": "bench", "host": "bench", "pid": os.getpid(), "started": 0})
    for start in range(0, rows, BLOCK):
        n = min(BLOCK, rows - start)
        lengths = rng.integers(60, 183, n)
        ids = rng.integers(0, 151_643, int(lengths.sum()), dtype=np.int32)
        writer.add(ids, np.where(rng.random(len(ids)) < 0.6, ids, -100), lengths,
                   np.zeros((n, len(encoded_flags())), bool), [f"data.jsonl:{start + i + 1}" for i in range(n)],
                   ["x" * 420] * n)
    writer.close({"key": "bench"}, {})
    return path


def time_verify(entry: Path, repeats: int = 3) -> dict:
    """Opening an entry with its checksums checked and without, best of `repeats` each (page cache warm)."""
    from qwen_sft.data.rowstore import RowStore

    RowStore(entry)  # warm
    best = {}
    for _ in range(repeats):
        for verify in (False, True):
            t = time.perf_counter()
            RowStore(entry, verify=verify)
            best[verify] = min(best.get(verify, 1e9), time.perf_counter() - t)
    size = sum(p.stat().st_size for p in entry.iterdir()) / 2**20
    return {"open_s": best[False], "verify_s": best[True] - best[False], "entry_mib": size,
            "rows": RowStore(entry, verify=False).meta["rows"]}


def child_open(args) -> dict:
    """A cache hit, in-process: key + open + lengths (what every command does before anything else)."""
    from qwen_sft.data.dataset import encode_all
    from qwen_sft.data.tokenizer import load_tokenizer

    cfg = config(args, args.dataset)
    tok = load_tokenizer(cfg.model_name_or_path)
    started = time.perf_counter()
    rows, _ = encode_all(cfg, tok, log=None)
    lengths = rows.lengths
    return {"seconds": time.perf_counter() - started, "rows": len(lengths), "peak_rss_mb": rss_mb(),
            "verify": time_verify(rows.store.path)}


# ---------------------------------------------------------------- parent


def run_child(args, phase: str, dataset: Path, workers: int = 1) -> dict:
    cmd = [sys.executable, str(HERE), "--child", phase, "--dataset", str(dataset), "--workers", str(workers),
           "--workdir", str(args.workdir), "--model", str(args.model), "--cache", str(args.cache)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env())
    return json.loads(out.stdout.strip().splitlines()[-1])


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": "1"}


def train_start(args, dataset: Path, name: str) -> dict:
    """`qwen-sft train` to its first optimizer step (max_steps=1) on a warm cache: wall time and peak RSS."""
    import yaml

    run_cfg = {"model_name_or_path": str(args.model), "dataset": str(dataset), "data_cache_dir": str(args.cache),
               "cutoff_len": 4096, "max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
               "bf16": False, "gradient_checkpointing": False, "lora_rank": 8, "lora_alpha": 16, "report_to": "none",
               "save_steps": 1000, "output_dir": str(args.workdir / "runs"), "run_name": name,
               "overwrite_output_dir": True, "preprocessing_num_workers": args.workers}
    path = args.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(run_cfg))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "qwen_sft.cli", "train", str(path)], capture_output=True, text=True,
                         env=env(), cwd=args.workdir)
    wall = time.perf_counter() - started
    if out.returncode:
        raise SystemExit(f"train failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    metrics = json.loads((args.workdir / "runs" / name / "metrics.json").read_text())
    said = [line for line in out.stdout.splitlines() if line.startswith("data cache:")]
    return {"wall_s": wall, "step_s": metrics["train_runtime"], "peak_rss_mb": metrics["peak_memory_gb"] * 1024,
            "cache_line": said[0] if said else ""}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--sample_rows", type=int, default=20_000, help="rows of the side-by-side encode (today vs ours)")
    p.add_argument("--workers", type=int, default=None, help="default: the cores available (os.sched_getaffinity)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/qwen-sft-bench-data"))
    p.add_argument("--only", choices=["all", "sample", "full", "verify"], default="all",
                   help="sample: phases 1-3 only; full: phases 1, 4, 5, 6 only; verify: 6 only, on an entry of the "
                   "1M-row shape")
    p.add_argument("--repeats", type=int, default=1, help="phases 2-3 run this many times, interleaved; the best "
                   "(fastest) of each is kept: other jobs on a shared machine only ever slow a run down")
    p.add_argument("--child"), p.add_argument("--dataset", type=Path), p.add_argument("--model", type=Path)
    p.add_argument("--cache", type=Path)
    args = p.parse_args()
    if args.child:
        print(json.dumps({"today": child_today, "ours": child_ours, "open": child_open}[args.child](args)))
        return

    sys.path.insert(0, str(REPO / "src"))
    from qwen_sft.data.parallel import available_cores
    from qwen_sft.model import build_tiny_model

    args.workers = args.workers or available_cores()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.only == "verify":
        import shutil

        entry = args.workdir / "verify-entry"
        shutil.rmtree(entry, ignore_errors=True)
        res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
               "cores": available_cores(), "load_avg_start": os.getloadavg(),
               "verify": time_verify(synthetic_entry(entry, args.rows))}
        shutil.rmtree(entry, ignore_errors=True)
        res["load_avg_end"] = os.getloadavg()
        (args.workdir / "results-verify.json").write_text(json.dumps(res, indent=2))
        report(res)
        return
    args.model = args.workdir / "tiny-qwen3"
    if not (args.model / "config.json").exists():
        build_tiny_model(args.model)
    data = args.workdir / f"rows-{args.rows}.jsonl"
    small, sample = args.workdir / "rows-10000.jsonl", args.workdir / f"sample-{args.sample_rows}.jsonl"
    t = time.perf_counter()
    if args.only == "sample":  # the head of a longer run when sample_rows is a multiple of 10,000 (seeded blocks)
        data = sample
        generate(sample, args.sample_rows)
    elif not data.exists():
        generate(data, args.rows)
    if args.only != "sample":
        head(data, small, 10_000)
        head(data, sample, args.sample_rows)
    print(f"generated {data} ({data.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s", flush=True)

    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
           "cores": available_cores(), "workers": args.workers, "rows": args.rows, "sample_rows": args.sample_rows,
           "load_avg_start": os.getloadavg()}
    import shutil

    shutil.rmtree(args.workdir / "cache", ignore_errors=True)
    if args.only in ("all", "sample"):
        for k in range(args.repeats):  # interleaved: the machine's load hits every path alike
            for key, phase, workers in (("today", "today", 1), ("ours_1", "ours", 1), ("ours_n", "ours", args.workers)):
                args.cache = args.workdir / "cache" / f"{key}-{k}"
                got = run_child(args, phase, sample, workers)
                if key != "today" and got["digest"] != res.get("today", got)["digest"]:
                    raise SystemExit(f"{key}: the encoded rows differ from today's path")
                if key not in res or got["seconds"] < res[key]["seconds"]:
                    res[key] = got
                print(f"{key} ({k + 1}/{args.repeats}): {got['seconds']:.1f} s, {got['cpu_s']:.1f} CPU-s", flush=True)
    if args.only in ("all", "full"):
        args.cache = args.workdir / "cache" / "full"
        res["full"] = run_child(args, "ours", data, args.workers)
        print(f"ours, {args.rows} rows: {res['full']['seconds']:.0f} s", flush=True)
        res["open_full"] = run_child(args, "open", data)
        run_child(args, "ours", small, args.workers)  # the 10k run's cache, warm
        res["start_10k"] = train_start(args, small, "start-10k")
        res["start_full"] = train_start(args, data, f"start-{args.rows}")
    res["load_avg_end"] = os.getloadavg()
    (args.workdir / f"results-{args.only}.json").write_text(json.dumps(res, indent=2))
    report(res)


def report(res: dict) -> None:
    rate = lambda r: r["rows"] / r["seconds"]  # noqa: E731
    print(f"\n{res['date']}, {res['machine']}, {res['cores']} cores, load average {res['load_avg_start'][0]:.1f} at "
          "start, "
          f"{res['load_avg_end'][0]:.1f} at end")
    if "today" in res:
        n, w = res["sample_rows"], res["ours_n"]["workers"]
        today, one, many = res["today"], res["ours_1"], res["ours_n"]
        print(f"\nencode {n} sample rows (identical rows checked: digest {many['digest'][:12]})")
        print(f"  {'path':34} {'seconds':>8} {'rows/s':>8} {'vs today':>9} {'CPU-s':>7} {'peak RSS MB':>12}")
        for name, r in (
            ("today (1 process, lists)", today),
            ("ours, 1 worker (in-process)", one),
            (f"ours, {w} workers", many),
        ):
            cpu = r["cpu_s"] + r.get("workers_cpu_s", 0)
            print(f"  {name:34} {r['seconds']:8.1f} {rate(r):8.0f} {today['seconds'] / r['seconds']:9.2f} {cpu:7.1f} "
                  f"{r['peak_rss_mb']:12.0f}" + (f" (+ workers {r['workers_peak_rss_mb']:.0f})" if r is many else ""))
        print(f"  scaling with {w} workers: {one['seconds'] / many['seconds']:.2f}x of 1 worker = "
              f"{one['seconds'] / many['seconds'] / w:.2f} per core (target >= 0.8), wall clock")
        spent = many["cpu_s"] + many["workers_cpu_s"]
        print(f"  parallel efficiency (1-worker CPU-s / {w}-worker CPU-s, main + workers): {one['cpu_s'] / spent:.2f}: "
              "the "
              f"per-core scaling {w} idle cores would give")
    v = res.get("verify") or res.get("open_full", {}).get("verify")
    if v:
        print(f"\nverify {v['rows'] / 1e6:g}M-row entry: {v['verify_s']:.2f} s (CRC-32 of {v['entry_mib']:.0f} MiB on "
              f"{res['cores']} cores, page cache warm), on top of {v['open_s']:.3f} s to open it without the check")
    if "full" in res:
        full = res["full"]
        print(f"\nfirst encode of {res['rows']} rows, {full['workers']} workers: {full['seconds']:.0f} s, "
              f"{rate(full):.0f} "
              f"rows/s ({(full['cpu_s'] + full['workers_cpu_s']) / full['rows'] * 1e6:.0f} CPU-us a row), cache "
              f"{full['cache_mb']:.0f} MiB, peak RSS {full['peak_rss_mb']:.0f} MB (+ workers "
              f"{full['workers_peak_rss_mb']:.0f})")
        print(f"cache hit, open {res['open_full']['rows']} rows in-process: {res['open_full']['seconds']:.2f} s")
        s10, sf = res["start_10k"], res["start_full"]
        print(f"\nqwen-sft train, max_steps=1, warm cache ({sf['cache_line'][:60]}...)")
        print(f"  {'rows':>10} {'wall s':>8} {'step s':>8} {'peak RSS MB':>12}")
        print(f"  {10_000:>10} {s10['wall_s']:8.1f} {s10['step_s']:8.2f} {s10['peak_rss_mb']:12.0f}")
        print(f"  {res['rows']:>10} {sf['wall_s']:8.1f} {sf['step_s']:8.2f} {sf['peak_rss_mb']:12.0f}")
        print(f"  RSS growth 10k -> {res['rows']}: {sf['peak_rss_mb'] - s10['peak_rss_mb']:.0f} MB (target < 300); "
              f"cached start {sf['wall_s']:.1f} s (target < 10)")


if __name__ == "__main__":
    main()
