"""Shared set-up of the UI tests: a workspace, an in-process client (API tests), a real server + Chromium
(browser tests). A later page or API area adds its tests here with the same fixtures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_train import write_rows

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("QWEN_SFT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
# Only a developer without Chromium sets this; CI never does (the browser tests must run there).
SKIP_BROWSER = os.environ.get("QWEN_SFT_SKIP_BROWSER_TESTS") == "1"


def tiny_config(**over) -> dict:
    """A training config for the tiny model in a workspace made by make_workspace (paths relative to it)."""
    cfg = {"model_name_or_path": "models/tiny", "dataset": "data/train.jsonl", "lora_rank": 4, "lora_alpha": 8,
           "learning_rate": 1e-3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
           "max_steps": 6, "warmup_ratio": 0.0, "bf16": False, "gradient_checkpointing": False, "cutoff_len": 128,
           "output_dir": "runs", "run_name": "tiny", "logging_steps": 1, "save_steps": 100, "report_to": "none",
           "val_size": 2, "eval_steps": 3, "seed": 3}
    cfg.update(over)
    return cfg


def make_workspace(root: Path, with_model: bool = False) -> Path:
    ws = root.resolve()
    (ws / "sft" / "configs").mkdir(parents=True)
    (ws / "data").mkdir()
    write_rows(ws / "data" / "train.jsonl", n=24)
    (ws / "sft" / "configs" / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    if with_model:
        from tests.tiny import tiny_model_dir

        shutil.copytree(tiny_model_dir(), ws / "models" / "tiny")
    return ws


def write_live(run_dir: Path, records: list[dict]) -> Path:
    """A live record as the trainer writes it (for runs that need no training)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "live.jsonl", "a") as f:
        for r in records:
            f.write(json.dumps({"time": time.time(), **r}) + "\n")
    return run_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UIServer:
    """`qwen-sft ui` as a real process (its own session, as a user runs it)."""

    def __init__(self, workspace: Path, env: dict | None = None, *args: str):
        self.log = open(workspace.parent / f"ui-{time.time_ns()}.log", "w+")
        cmd = [sys.executable, "-m", "qwen_sft.cli", "ui", "--workspace", str(workspace), "--port", "0", *args]
        # SIGINT as a terminal's foreground command has it: a suite started in the background (`cmd &` without job
        # control) ignores SIGINT, the server would inherit that, and a Ctrl-C test would read exit 0, not 130.
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        end = time.time() + 60
        while True:
            self.log.seek(0)
            text = self.log.read()
            if "open http" in text:
                self.url = text.split("open ", 1)[1].split()[0]
                break
            assert self.proc.poll() is None, f"qwen-sft ui exited:\n{text}"
            assert time.time() < end, f"qwen-sft ui did not start:\n{text}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


def end_leftover_trainers(ws: Path) -> None:
    """Kill the trainers a failed test left running in ws's runs: each by the pid its launch recorded, no other."""
    from qwen_sft import live

    for launch in ws.glob("runs/*/ui_launch.json"):
        info = json.loads(launch.read_text())
        if live.trainer_alive(info):
            os.kill(info["pid"], signal.SIGKILL)


@pytest.fixture(scope="session")
def browser():
    if SKIP_BROWSER:
        # Opt-out for a developer machine without Chromium; CI never sets it (tools/test.sh installs chromium), and
        # without the variable a missing browser fails these tests instead of skipping them.
        pytest.skip("QWEN_SFT_SKIP_BROWSER_TESTS=1: no browser on this machine (never set in CI)")
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; "
                                     "tools/test.sh does it), or set QWEN_SFT_SKIP_BROWSER_TESTS=1 to leave these "
                                     "tests out")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser page; the test fails on any error the page logs or throws."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # A refusal the page shows (422: a mode the template cannot serve) is also logged by the browser: not an error;
    # nor is a server without the plan (/api/plan answers 404: the New run page then hides its plan panel).
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 422" not in m.text
          and not (m.location or {}).get("url", "").endswith("/api/plan") else None)
    yield pg
    context.close()
    assert not errors, f"errors in the page: {errors}"
