"""`qwen-sft ui` as a user starts it: the printed URL, the token off loopback, clear errors, a clean exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import urllib.error
import urllib.request

from qwen_sft import live
from tests.ui.conftest import REPO, UIServer, make_workspace


def get(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_any_other_host_prints_a_token_url_and_needs_it(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    server = UIServer(ws, None, "--host", "0.0.0.0")
    try:
        assert server.url.startswith(f"http://{socket.gethostname()}:") and "?token=" in server.url
        token = server.url.split("?token=")[1]
        local = f"http://127.0.0.1:{server.url.split(':')[2].split('/')[0]}"
        assert get(f"{local}/api/runs/list") == 401
        assert get(f"{local}/api/runs/list", {"Authorization": f"Bearer {token}"}) == 200
        server.log.seek(0)
        assert server.log.read().count(token) == 1  # printed once
        server.proc.send_signal(signal.SIGINT)  # Ctrl-C: the server ends (runs it started would not)
        assert server.proc.wait(timeout=30) == 130  # as a shell reports Ctrl-C
    finally:
        server.stop()


def test_loopback_needs_no_token_and_sigterm_leaves_nothing_in_tmp(tmp_path):
    (tmp_path / "tmp").mkdir()
    server = UIServer(make_workspace(tmp_path / "ws"), {"TMPDIR": str(tmp_path / "tmp")})
    try:
        assert "?token=" not in server.url and server.url.startswith("http://127.0.0.1:")
        assert get(server.url + "api/runs/list") == 200
        assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "tmp").iterdir()) == [
            "qwen-sft-ui", "qwen-sft-ui-chat"]  # its scratch folders, while it runs
        server.proc.terminate()  # was: killed by the SIGTERM uvicorn raises again after its shutdown, leaving them
        assert server.proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert not list((tmp_path / "tmp").iterdir())
        server.log.seek(0)
        assert "Traceback" not in server.log.read()
    finally:
        server.stop()


def test_bad_port_and_workspace_are_one_line_errors(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args, message in ((["--port", str(port)], f"error: port {port} is in use"),
                              (["--workspace", str(tmp_path / "missing")], "error: --workspace")):
            r = subprocess.run([sys.executable, "-m", "qwen_sft.cli", "ui", *args], cwd=REPO, capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 2 and r.stderr.startswith(message) and "Traceback" not in r.stderr, r.stderr


def call(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_detail(base: str, run: str, ok, timeout: float = 240) -> dict:
    end = time.time() + timeout
    while True:
        d = call(base, f"api/runs/detail?run={run}")
        if ok(d):
            return d
        assert time.time() < end, d
        time.sleep(0.3)


@pytest.mark.slow
def test_a_run_outlives_the_ui_and_a_new_ui_stops_it(tmp_path):
    ws = make_workspace(tmp_path / "ws", with_model=True)
    first = UIServer(ws, {"QWEN_SFT_DEBUG_STEP_DELAY": "0.5"})
    try:
        started = call(
            first.url,
            "api/runs/start",
            {"base": "sft/configs/tiny.yaml", "values": {"run_name": "long", "max_steps": "200", "val_size": "0"}},
        )
        assert started["run"] == "runs/long"
        wait_detail(first.url, "runs/long", lambda d: d["status"] == "running" and d["points"])
    finally:
        first.stop()  # the UI ends (SIGTERM); the trainer, in a session of its own, goes on
    pid = json.loads((ws / "runs" / "long" / "ui_launch.json").read_text())["pid"]
    second = UIServer(ws)
    try:
        d = wait_detail(second.url, "runs/long", lambda d: True)
        assert d["status"] == "running" and d["pid"] == pid and d["can_stop"], d
        n = len(d["points"])
        wait_detail(second.url, "runs/long", lambda d: len(d["points"]) > n)  # still training
        assert call(second.url, "api/runs/stop", {"run": "runs/long"})["stops"] == 1
        d = wait_detail(second.url, "runs/long", lambda d: d["status"] != "stopping" and d["status"] != "running")
        assert d["status"] == "stopped" and d["checkpoint"].endswith(f"checkpoint-{d['step']}"), d
        assert d["checkpoints"][-1]["path"] == f"runs/long/checkpoint-{d['step']}"
    finally:
        second.stop()
        info = json.loads((ws / "runs" / "long" / "ui_launch.json").read_text())
        if live.trainer_alive(info):  # a failed assertion above: end that trainer, by its pid
            os.kill(info["pid"], signal.SIGKILL)
