"""`qwen-sft ui` as a user starts it: the printed URL, the token off loopback, clear errors, a clean exit."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

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


def test_loopback_needs_no_token(tmp_path):
    server = UIServer(make_workspace(tmp_path / "ws"))
    try:
        assert "?token=" not in server.url and server.url.startswith("http://127.0.0.1:")
        assert get(server.url + "api/runs/list") == 200
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
