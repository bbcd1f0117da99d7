"""`qwen-sft cache build / ls / clean` and a build killed with SIGKILL: the next build starts afresh and ends
with the same rows; the killed build's workers do not outlive it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qwen_sft.data.rowstore import RowStore
from qwen_sft.samples import generate_samples
from tests.cli import run_cli as cli  # `qwen-sft ARGS` in this process (the killed build needs its own)
from tests.e2e.test_train import REPO

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line holds marker (the build and its forked workers share theirs)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and marker in (p / "cmdline").read_bytes().decode(errors="replace") \
                    and (p / "stat").read_text().split()[2] != "Z":
                found.append(int(p.name))
        except OSError:
            continue
    return found


def test_sigkill_mid_build_then_build_again(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generate_samples(1100, seed=1)))
    cache = tmp_path / "cache"
    cfg = tmp_path / "killed.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": str(data), "data_cache_dir": str(cache), "preprocessing_num_workers": 2}))
    proc = subprocess.Popen([sys.executable, "-m", "qwen_sft.cli", "cache", "build", str(cfg)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while len(processes_with(str(cfg))) < 3:  # the build and its 2 workers, writing into its temporary directory
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-build: files open, no marker
    proc.wait()
    torn = [p for p in cache.iterdir()]
    assert len(torn) == 1 and torn[0].name.startswith(".tmp-") and not (torn[0] / "COMPLETE").exists()
    for _ in range(50):  # the workers notice their parent is gone (they check every second)
        if not processes_with(str(cfg)):
            break
        time.sleep(0.2)
    assert processes_with(str(cfg)) == []
    # A worker in the middle of exiting has an empty command line but still holds the build's lock for a moment
    # (seen on a slow CI machine): the build reads "being built" until its last worker is gone, then unfinished.
    for _ in range(50):
        listed = cli(capsys, "cache", "ls", "--dir", cache)
        if "being built" not in listed.stdout:
            break
        time.sleep(0.2)
    assert "unfinished build" in listed.stdout, listed.stdout

    out = cli(capsys, "cache", "build", cfg)
    assert out.returncode == 0, out.stderr
    assert "data cache: encoding" in out.stderr and "rows read 1100" in out.stdout
    (entry,) = cache.iterdir()  # the torn directory is gone
    rows = RowStore(entry)
    # 1100 data rows; the cache holds their sequences (a multi-turn row: one per reply a later turn renders
    # otherwise, data/encode.py)
    assert rows.report["rows_kept"] == 1100 and len(rows) == rows.report["sequences"] > 1100
    assert (entry / "COMPLETE").exists()
    # The same rows as a build that was never interrupted (one process, elsewhere).
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(yaml.safe_dump({"dataset": str(data), "data_cache_dir": str(tmp_path / "fresh"),
                                     "preprocessing_num_workers": 1}))
    assert cli(capsys, "cache", "build", fresh).returncode == 0
    (other,) = (tmp_path / "fresh").iterdir()
    assert other.name == entry.name and RowStore(other).meta["rows_sha256"] == rows.meta["rows_sha256"]

    # check and inspect on the same config read the entry back; ls shows it; clean removes it.
    again = cli(capsys, "check", data, "--config", cfg, "--report", tmp_path / "r.json")
    assert again.returncode == 0 and f"data cache: {len(rows)} encoded rows from {entry}" in again.stderr, again.stderr
    shown = cli(capsys, "inspect", cfg, "--n", "2", "--json")
    assert [len(json.loads(line)["input_ids"]) for line in shown.stdout.splitlines()] == \
        [int(n) for n in (rows.offsets[1] - rows.offsets[0], rows.offsets[2] - rows.offsets[1])]
    listed = cli(capsys, "cache", "ls", "--dir", cache).stdout
    assert f"{entry.name[:12]}" in listed and f"{len(rows)} rows" in listed and str(data) in listed
    assert "removed 0 entries" in cli(capsys, "cache", "clean", "--dir", cache).stdout
    assert "removed 1 entry" in cli(capsys, "cache", "clean", entry.name[:8], "--dir", cache).stdout
    assert list(cache.iterdir()) == []


def test_ctrl_c_while_a_run_encodes_stops_it_within_a_chunk(tmp_path):
    """One process: a SIGINT during the first encode ends it at the next chunk (exit 3, nothing cached), not
    after the whole dataset. (Several processes finish the encode and stop together before the first step.)"""
    import threading

    import pytest

    from qwen_sft.config import build_config
    from qwen_sft.errors import StopRequested
    from qwen_sft.train import train
    from tests.e2e.test_train import base_cfg

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generate_samples(3000, seed=2)))
    cache = tmp_path / "cache"
    cfg = build_config(base_cfg(tmp_path, data_cache_dir=str(cache), preprocessing_num_workers=1))

    def interrupt():
        while not (cache.exists() and any(cache.iterdir())):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # what a Ctrl-C in the terminal does

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(StopRequested, match="stopped while encoding the data; nothing was saved"):
        train(cfg)
    assert list(cache.iterdir()) == [] and not cfg.run_dir.joinpath("data_report.json").exists()


def test_a_reader_that_leaves_early_is_no_traceback(tmp_path):
    """#23 item 17: `qwen-sft cache ls | head -1` and `inspect --json | head -c 100` printed a BrokenPipeError
    traceback. The pipe's read end is closed before the command writes: exit 141 (128 + SIGPIPE), stderr clean."""
    from qwen_sft.assets import qwen3_tokenizer_dir

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generate_samples(20, seed=1)))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": str(data), "data_cache_dir": str(tmp_path / "cache")}))
    for args in (["cache", "ls", "--dir", tmp_path / "cache"],
                 ["inspect", cfg, "--n", "20", "--json", "--tokenizer", qwen3_tokenizer_dir()]):
        proc = subprocess.Popen([sys.executable, "-m", "qwen_sft.cli", *map(str, args)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # `head` has read what it wanted and left
        err = proc.stderr.read()
        assert proc.wait(timeout=300) == 141, err
        assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
