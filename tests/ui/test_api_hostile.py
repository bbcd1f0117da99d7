"""`qwen-sft ui` under hostile but realistic use (issue 23): files outside the workspace, unproven pids, the
network, bad values, big bodies, stuck files, a Stop right after a start, odd run names, protocol details."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml
from starlette.testclient import TestClient

from qwen_sft import cli, launch, live
from qwen_sft.data.formats import WORKSPACE_ENV, expand_paths
from qwen_sft.errors import UserError
from qwen_sft.ui import configs, models
from qwen_sft.ui.application import create_app
from qwen_sft.ui.context import Settings
from qwen_sft.ui.jobs import Jobs
from qwen_sft.ui.procs import Launcher
from qwen_sft.ui.security import MAX_BODY_BYTES
from qwen_sft.ui.server import allowed_hosts
from qwen_sft.ui.store import RunStore
from tests.ui.conftest import make_workspace, tiny_config, write_live
from tests.ui.test_api import HUB_MODEL, check, client, running_record

LONG = "x" * 300  # one path component over the 255 bytes a file name may have
TOO_LONG_WORDS = "a file or directory name may have at most 255"


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path / "ws")


def raw_client(ws, **kw) -> TestClient:
    """A client that gets the server's answer to an error (a 500 included) instead of the exception."""
    c = client(ws, **kw)
    return TestClient(c.app, base_url=str(c.base_url), raise_server_exceptions=False)


def post(c, path: str, body, content_type: str = "application/json"):
    """A JSON POST as bytes (ensure_ascii: a lone surrogate travels as its \\ud800 escape, as a browser's may)."""
    return c.post(path, content=json.dumps(body).encode(), headers={"content-type": content_type})


def refused(r, status: int | tuple, words: str = "") -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    error = r.json()["error"]
    assert isinstance(error, str) and error and "internal error" not in error and words in error, error
    return r.json()


@contextlib.contextmanager
def served(app):
    """The app behind a real uvicorn server on a free port (what a browser talks to): requests run concurrently."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app.state.ui.settings.port = port
    app.state.ui.settings.allowed_hosts = allowed_hosts("127.0.0.1", port, [])
    # log_config=None: uvicorn's own logging (an exception in the app, a request it refuses) goes to the root logger,
    # which pytest captures per test and shows with a failure; its default handler writes to the stream of the test
    # that started the server (a module fixture), where a later test's server-side error would go unseen.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
                                           log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def app_for(ws):
    settings = Settings(workspace=ws, port=0, poll_s=0.05, allowed_hosts=set())
    return create_app(settings)


def get_json(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------- 6: every data file inside the workspace


def test_each_file_of_a_dataset_directory_is_held_inside_the_workspace(ws, tmp_path):
    (tmp_path / "secret.jsonl").write_text((ws / "data/train.jsonl").read_text())
    linkdir = ws / "data" / "linkdir"
    linkdir.mkdir()
    (linkdir / "ok.jsonl").write_text((ws / "data/train.jsonl").read_text())
    (linkdir / "secret.jsonl").symlink_to(tmp_path / "secret.jsonl")
    result = check(client(ws), {"dataset": "data/linkdir", **HUB_MODEL})
    assert not result["ok"]
    assert result["errors"]["dataset"] == [
        f"dataset: data/linkdir/secret.jsonl leads outside the workspace {ws} (a symbolic link?); a run started "
        "here reads only files inside it"]
    # A save_to_disk directory names its files in state.json: ../.. there leads out too.
    saved = ws / "data" / "saved"
    saved.mkdir()
    (tmp_path / "outside.arrow").write_bytes(b"x")
    (saved / "dataset_info.json").write_text("{}")
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../../../outside.arrow"}]}))
    errors = check(client(ws), {"dataset": "data/saved", **HUB_MODEL})["errors"]["dataset"]
    assert errors == [f"dataset: data/saved/../../../outside.arrow leads outside the workspace {ws} (a symbolic "
                      "link?); a run started here reads only files inside it"]
    (linkdir / "secret.jsonl").unlink()
    assert check(client(ws), {"dataset": "data/linkdir", **HUB_MODEL})["ok"]


def test_processes_the_ui_starts_read_no_data_file_outside_the_workspace(ws, tmp_path, monkeypatch):
    """The check above holds when the form is checked; a link added to the directory after that is refused when
    the run reads it: the UI's trainer and jobs get the workspace in their environment (formats.WORKSPACE_ENV)."""
    (tmp_path / "secret.jsonl").write_text("{}\n")
    linkdir = ws / "data" / "linkdir"
    linkdir.mkdir()
    (linkdir / "secret.jsonl").symlink_to(tmp_path / "secret.jsonl")
    assert [p.name for p in expand_paths(str(linkdir))] == ["secret.jsonl"]  # the CLI, as before
    monkeypatch.setenv(WORKSPACE_ENV, str(ws))
    with pytest.raises(UserError) as e:
        expand_paths(str(linkdir))
    assert str(e.value) == (f"{linkdir / 'secret.jsonl'}: leads to {tmp_path / 'secret.jsonl'}, outside the workspace "
                            f"{ws} of `qwen-sft ui`, which lets a run it started read only files inside it (a "
                            "symbolic link in a dataset directory?)")
    assert expand_paths(str(ws / "data")) == [ws / "data" / "train.jsonl"]
    monkeypatch.delenv(WORKSPACE_ENV)
    show_env = [sys.executable, "-c", f"import os; print('env:', os.environ.get({WORKSPACE_ENV!r}))"]
    launched = Launcher(ws).start(ws / "runs" / "r", show_env)
    job = Jobs(ws).start("check", "env", show_env, ws / "job.log")
    end = time.time() + 30
    while not (job.status == "finished" and live.process_start_time(launched["pid"]) is None):
        assert time.time() < end
        time.sleep(0.05)
    assert f"env: {ws}" in (ws / "runs" / "r" / "train.log").read_text()
    assert f"env: {ws}" in (ws / "job.log").read_text()


# ---------------------------------------------------------------- 7: signal only a proven trainer


def sleeper(tmp_path, hold_lock_of=None):
    """A process that notes each SIGINT it gets in a file (and holds a run's lock, when asked)."""
    got = tmp_path / f"signals-{time.time_ns()}"
    script = ("import signal, sys, time\nfrom pathlib import Path\nfrom qwen_sft import runlock\n"
              f"def h(s, f): open({str(got)!r}, 'a').write(str(s) + chr(10))\n"
              "signal.signal(signal.SIGINT, h)\n"
              f"ctx = runlock.hold(Path({str(hold_lock_of)!r})) if {hold_lock_of is not None} else None\n"
              "ctx and ctx.__enter__()\nprint('ready', flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    return child, got


def test_stop_signals_only_a_process_proven_to_be_the_runs_trainer(ws, tmp_path):
    """A live.jsonl that names a pid and nothing else (an upload, a copied workspace) must not get that process
    signalled: was, `pid_start: None` counted as a match and any process of the user's got SIGINT."""
    run = ws / "runs" / "copied"
    child, got = sleeper(tmp_path)
    try:
        write_live(run, [{"status": "running", "phase": "setup", "pid": child.pid, "host": socket.gethostname(),
                          "config": tiny_config()}])
        c = client(ws)
        r = c.post("/api/runs/stop", json={"run": "runs/copied"})
        assert r.status_code == 409 and r.json()["error"] == (
            f"runs/copied: pid {child.pid} is not proven to be this run's trainer (it does not hold the run's lock, "
            "and "
            "the record gives no start time that matches it), so it was not signalled; if it is the trainer, stop "
            f"it where it runs (Ctrl-C, or kill -INT {child.pid})")
        # A start time that is not this process's proves nothing either.
        write_live(run, [{**running_record(pid=child.pid), "pid_start": 12345}])
        assert c.post("/api/runs/stop", json={"run": "runs/copied"}).status_code == 409
        time.sleep(0.3)
        assert not got.exists(), "an unproven process was signalled"
    finally:
        child.kill()
        child.wait()
    # The holder of the run's lock is the trainer, whatever its record says.
    locked = ws / "runs" / "locked"
    locked.mkdir(parents=True)
    child, got = sleeper(tmp_path, hold_lock_of=locked)
    try:
        write_live(locked, [{"status": "running", "phase": "setup", "pid": child.pid, "host": socket.gethostname(),
                             "config": tiny_config()}])
        r = client(ws).post("/api/runs/stop", json={"run": "runs/locked"})
        assert r.status_code == 200 and r.json()["stops"] == 1, r.text
        end = time.time() + 10
        while not (got.exists() and got.read_text().split() == [str(int(signal.SIGINT))]):
            assert time.time() < end, "the lock holder did not get its SIGINT"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()


def test_identity_is_proven_by_the_lock_or_the_start_time_only():
    me = os.getpid()
    assert live.identity_proven({"pid": me, "pid_start": live.process_start_time(me)})
    assert not live.identity_proven({"pid": me})
    assert not live.identity_proven({"pid": me, "pid_start": None})
    assert not live.identity_proven({"pid": me, "pid_start": live.process_start_time(me) + 1})
    assert not live.identity_proven({"pid": True, "pid_start": live.process_start_time(1)})  # True is not pid 1
    assert not live.identity_proven({"pid": "1"})


# ---------------------------------------------------------------- 8: no network, no cross-site GET, failures kept


def test_a_hub_tokenizer_never_reaches_the_network_and_its_failure_is_remembered(ws, monkeypatch):
    calls = []

    def no_network(*args, **kw):
        calls.append(args[:2])
        raise OSError("the test allows no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    loads = []
    real_load = models.Tokenizers._load
    monkeypatch.setattr(models.Tokenizers, "_load", lambda self, spec: loads.append(spec) or real_load(self, spec))
    c = client(ws)
    params = {"file": "data/train.jsonl", "tokenizer": "someorg/somemodel"}
    started = time.monotonic()
    first = refused(c.get("/api/data/rows", params=params), 404)
    assert first["error"] == ("tokenizer: someorg/somemodel is not in the local Hugging Face cache, and the UI "
                              "downloads "
                              "nothing here; download it (`hf download someorg/somemodel`), or choose a bundled "
                              "tokenizer or a model of the workspace")
    assert refused(c.get("/api/data/row", params={**params, "index": 0}), 404) == first  # from memory
    assert time.monotonic() - started < 10
    assert calls == [] and loads == ["someorg/somemodel"]


def test_a_tokenizer_that_loads_slowly_holds_up_no_other_request(ws, monkeypatch):
    """Was: the load held the lock that every row request waits on (59 s offline for a hub id)."""
    release = threading.Event()
    real_load = models.Tokenizers._load

    def load(self, spec):
        if spec == "slow/one":
            release.wait(30)
            raise models.ApiError(404, "slow/one: gone")
        return real_load(self, spec)

    monkeypatch.setattr(models.Tokenizers, "_load", load)
    c = client(ws)
    params = {"file": "data/train.jsonl", "count": 1}
    assert c.get("/api/data/rows", params=params).status_code == 200  # the bundled tokenizer, loaded
    slow = threading.Thread(target=lambda: c.get("/api/data/rows", params={**params, "tokenizer": "slow/one"}))
    slow.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert c.get("/api/data/rows", params=params).status_code == 200
        assert time.monotonic() - started < 5
    finally:
        release.set()
        slow.join(30)


def test_api_requests_from_another_site_are_refused_gets_included(ws):
    c = client(ws)
    for path in ("/api/data/rows?file=data/train.jsonl", "/api/runs/list", "/api/models/list", "/api/session"):
        for site in ("cross-site", "same-site"):  # same-site: another port of this host, another subdomain
            refused(c.get(path, headers={"sec-fetch-site": site}), 403, "cross-site request refused")
        for site in ("same-origin", "none"):  # the page itself; the address bar
            assert c.get(path, headers={"sec-fetch-site": site}).status_code == 200, (path, site)
    # A link from another site to the page itself still opens it.
    assert c.get("/", headers={"sec-fetch-site": "cross-site"}).status_code == 200


# ---------------------------------------------------------------- 9: every path field of the form


PATH_WORDS = ("path", "directory", "file", "folder")
# Fields whose help mentions those words without naming a path themselves.
NOT_PATHS = {"data_format", "overwrite_output_dir", "trust_remote_code", "skip_invalid", "report_to",
             "save_total_limit", "force_resume", "preprocessing_num_workers", "distributed_strategy"}


def test_the_form_knows_every_path_field_of_the_config():
    import dataclasses

    from qwen_sft.config import TrainConfig

    pathish = {f.name for f in dataclasses.fields(TrainConfig)
               if any(w in f.metadata.get("help", "").lower() for w in PATH_WORDS)} - NOT_PATHS
    assert pathish <= set(configs.PATH_FIELDS), f"path fields the UI does not hold inside the workspace: " \
                                                 f"{sorted(pathish - set(configs.PATH_FIELDS))}"


@pytest.mark.parametrize("key,value", [("data_cache_dir", "/tmp/elsewhere-cache"), ("data_cache_dir", "../cache"),
                                       ("dataset", "/etc/passwd"), ("model_name_or_path", "/usr/lib"),
                                       ("resume_from_checkpoint", "/tmp"), ("output_dir", "/tmp"),
                                       ("run_name", "../../../x")])
def test_every_path_field_of_the_form_is_held_inside_the_workspace(ws, key, value):
    result = check(client(ws), {key: value, **HUB_MODEL} if key != "model_name_or_path" else {key: value})
    assert not result["ok"]
    assert any("outside the workspace" in e or "must name a directory inside output_dir" in e
               for e in result["errors"].get(key, [])), result["errors"]


def test_data_cache_dir_may_be_auto_null_or_a_folder_of_the_workspace(ws):
    for value in ("auto", "null", "cache/data"):
        assert check(client(ws), {"data_cache_dir": value, **HUB_MODEL})["ok"], value


# ---------------------------------------------------------------- 15: a name over 255 bytes: a 400, never OSError


def test_a_path_component_over_255_bytes_is_a_400_naming_it_everywhere(ws):
    c = raw_client(ws)
    for path in ("/api/runs/detail", "/api/runs/log", "/api/runs/events", "/api/ops/status", "/api/ops/generations"):
        refused(c.get(path, params={"run": LONG}), 400, TOO_LONG_WORDS)
    for path in ("/api/data/rows", "/api/data/row"):
        refused(c.get(path, params={"file": LONG}), 400, TOO_LONG_WORDS)
    refused(c.get("/api/data/search", params={"file": f"data/{LONG}", "q": "x"}), 400, TOO_LONG_WORDS)
    refused(c.get("/api/data/rows", params={"file": "data/train.jsonl", "tokenizer": f"./{LONG}"}), 400,
            TOO_LONG_WORDS)
    for path in ("/api/runs/stop", "/api/runs/resume", "/api/ops/merge", "/api/ops/eval"):
        refused(post(c, path, {"run": f"runs/{LONG}"}), 400, TOO_LONG_WORDS)
    refused(post(c, "/api/data/check", {"files": [LONG]}), 400, TOO_LONG_WORDS)
    refused(post(c, "/api/chat/load", {"panes": [f"./{LONG}"]}), 400, TOO_LONG_WORDS)
    refused(post(c, "/api/configs/check", {"base": f"{LONG}.yaml", "values": {}}), 400, TOO_LONG_WORDS)
    refused(c.post("/api/data/upload", params={"name": "x.jsonl", "dir": LONG}, content=b"{}\n",
                   headers={"content-type": "application/octet-stream"}), 400, TOO_LONG_WORDS)
    for key in ("dataset", "output_dir", "data_cache_dir"):
        errors = check(c, {key: f"data/{LONG}", **HUB_MODEL})["errors"]
        assert TOO_LONG_WORDS in errors[key][0], errors


# ---------------------------------------------------------------- 18: wrong types, odd text, deep bodies


def test_wrong_types_odd_text_and_deep_bodies_are_a_4xx_never_a_500(ws):
    c = raw_client(ws)
    refused(post(c, "/api/configs/check", {"base": 3, "values": {}}), 400, "base: expected")
    refused(post(c, "/api/runs/start", {"base": ["a"], "values": {}}), 400, "base: expected")
    refused(post(c, "/api/data/check", {"files": ["data/train.jsonl"], "tokenizer": 3}), 400, "tokenizer: expected")
    refused(post(c, "/api/jobs/cancel", {"id": [1]}), 400, "id: expected")
    refused(post(c, "/api/jobs/cancel", {"id": {"a": 1}}), 400, "id: expected")
    for path, body, field in (
        ("/api/runs/stop", {"run": "\ud800"}, "run"),
        ("/api/runs/resume", {"run": "runs/\udc80x"}, "run"),
        ("/api/configs/check", {"base": "sft/configs/tiny.yaml", "values": {"run_name": "a\ud800"}}, "values"),
        ("/api/chat/load", {"panes": ["\ud800"]}, "panes"),
        ("/api/ops/eval", {"run": "r", "data": ["\ud800"]}, "data"),
    ):
        assert refused(post(c, path, body), 400)["error"] == f"{field}: not valid text (a lone surrogate)"
    deep = b"[" * 100_000 + b"]" * 100_000
    refused(
        c.post("/api/configs/check", content=b'{"base": ' + deep + b"}", headers={"content-type": "application/json"}),
        400,
        "nested more than",
    )
    nested: dict = {}
    node = nested
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    refused(post(c, "/api/configs/check", {"base": "sft/configs/tiny.yaml", "values": nested}), 400,
            "values: nested more than 32 levels deep")


# ---------------------------------------------------------------- 19: bounded bodies, nothing blocking on the loop


def test_request_bodies_are_bounded(ws):
    c = raw_client(ws)
    body = json.dumps({"base": "sft/configs/tiny.yaml", "values": {}, "note": "x" * MAX_BODY_BYTES}).encode()
    r = c.post("/api/configs/check", content=body, headers={"content-type": "application/json"})
    refused(r, 413, f"the request body is over {MAX_BODY_BYTES // 2**20} MiB")

    def chunks():  # no Content-Length: counted as it comes
        for _ in range(MAX_BODY_BYTES // 2**20 + 2):
            yield b" " * 2**20

    r = c.post("/api/runs/start", content=chunks(), headers={"content-type": "application/json"})
    refused(r, 413, f"the request body is over {MAX_BODY_BYTES // 2**20} MiB")
    assert not (ws / "runs").exists()


def blocked(monkeypatch, target, name: str, release: threading.Event):
    real = getattr(target, name)

    def wait_then_run(*args, **kw):
        release.wait(20)
        return real(*args, **kw)

    monkeypatch.setattr(target, name, wait_then_run)


@pytest.mark.parametrize("what", ["check", "start", "runs"])
def test_slow_work_in_one_request_holds_up_no_other(ws, monkeypatch, what):
    """The form's check, a start and the runs table run in worker threads: was, on the event loop (a 4 MB value
    stalled every request for 2.5 s, a FIFO lock file froze the server)."""
    release = threading.Event()
    if what in ("check", "start"):
        blocked(monkeypatch, configs, "check", release)
    else:
        blocked(monkeypatch, RunStore, "summaries", release)
    app = app_for(ws)
    with served(app) as url:
        def slow():
            if what == "runs":
                return urllib.request.urlopen(f"{url}/api/runs/list", timeout=30).read()
            path = "/api/configs/check" if what == "check" else "/api/runs/start"
            req = urllib.request.Request(
                f"{url}{path}",
                method="POST",
                headers={"content-type": "application/json"},
                data=json.dumps({"base": "sft/configs/tiny.yaml", "values": {"lora_rank": "0"}}).encode(),
            )
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(req, timeout=30).read()

        thread = threading.Thread(target=slow)
        thread.start()
        try:
            time.sleep(0.5)  # the slow request is in
            started = time.monotonic()
            assert get_json(f"{url}/api/session", timeout=5)["workspace"] == str(ws)
            assert time.monotonic() - started < 2
        finally:
            release.set()
            thread.join(30)


def test_a_run_whose_lock_file_is_a_fifo_freezes_nothing(ws):
    """Issue 23 item 1, the UI's side: a run directory whose .qwen-sft.lock is a FIFO (opening it for reading waits
    for a writer, for good) and whose record says running; another whose live.jsonl is one. Was: the whole server
    hung (the lock was opened on the event loop)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    start = live.process_start_time(done.pid)
    done.wait()
    run = write_live(ws / "runs" / "fifo", [{**running_record(), "pid": done.pid, "pid_start": start}])
    other = ws / "runs" / "fifo-record"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump(tiny_config(run_name="fifo-record")))
    (other / "metrics.json").write_text(json.dumps({"train_steps": 2, "final_train_loss": 1.5}))
    fifos = [run / ".qwen-sft.lock", other / live.FILE]
    for fifo in fifos:
        os.mkfifo(fifo)
    app = app_for(ws)
    try:
        with served(app) as url:
            runs = get_json(f"{url}/api/runs/list", timeout=10)["runs"]
            assert sorted((r["id"], r["status"]) for r in runs) == [
                ("runs/fifo", "died"),
                ("runs/fifo-record", "finished"),
            ]
            assert get_json(f"{url}/api/runs/detail?run=runs/fifo", timeout=10)["can_stop"] is False
            assert get_json(f"{url}/api/session", timeout=5)["workspace"] == str(ws)
    finally:
        for fifo in fifos:
            with contextlib.suppress(OSError):  # a reader still waiting on it (the test failed): let it go
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


# ---------------------------------------------------------------- 21: a Stop right after the start


def test_a_stop_while_the_trainer_starts_is_a_clean_stop_before_the_first_step(ws, monkeypatch, capsys):
    """A SIGINT before the trainer catches signals (here: while it launches; in life, while it imports torch) was a
    KeyboardInterrupt traceback and a failed run. Now: exit 3, and the record says stopped before the first step."""
    (ws / "sft/configs/tiny.yaml").write_text(yaml.safe_dump(tiny_config(**HUB_MODEL)))  # no model is loaded
    real = launch.maybe_relaunch

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(launch, "maybe_relaunch", interrupted)
    monkeypatch.chdir(ws)
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(["train", "sft/configs/tiny.yaml"]) == 3
    assert signal.getsignal(signal.SIGINT) is before  # left as it was found
    err = capsys.readouterr().err
    assert "SIGINT received while starting: stopping before the first step" in err
    assert "error: stopped before the first step; nothing to save" in err and "Traceback" not in err
    records, _ = live.read_records(ws / "runs" / "tiny" / live.FILE)
    assert [r["status"] for r in records] == ["running", "stopped"]
    assert (
        records[-1]["message"] == "stopped before the first step; nothing to save" and records[-1]["checkpoint"] is None
    )


def test_a_stop_right_after_a_start_shows_stopped_before_it_started(tmp_path):
    """A real trainer started from the page and stopped 0.3 s later. Was: a stop message that promised a
    checkpoint, then a failed run with a traceback (a KeyboardInterrupt in an import)."""
    ws = make_workspace(tmp_path / "ws", with_model=True)
    c = client(ws)
    r = c.post("/api/runs/start", json={"base": "sft/configs/tiny.yaml", "values": {"run_name": "quick"}})
    assert r.status_code == 200, r.text
    time.sleep(0.3)
    stop = c.post("/api/runs/stop", json={"run": "runs/quick"}).json()
    assert stop["message"] == ("stop sent: the run has not started training; it ends before its first step, with "
                               "nothing to save")
    end = time.time() + 120
    while (d := c.get("/api/runs/detail", params={"run": "runs/quick"}).json())["status"] in ("starting", "running",
                                                                                             "stopping"):
        assert time.time() < end, d
        time.sleep(0.3)
    assert (d["status"], d["message"], d["checkpoint"], d["error"]) == \
        ("stopped", "stopped before the first step; nothing to save", None, None), d
    log = (ws / "runs" / "quick" / "train.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


# ---------------------------------------------------------------- 22: run names


@pytest.mark.parametrize("name", ["a?b", "a,b", "a\nb", "a#b", "a b"])
def test_the_form_refuses_a_run_name_the_cli_refuses(ws, name):
    from qwen_sft.argcheck import run_name_problem

    result = check(client(ws), {"run_name": name, **HUB_MODEL})
    assert not result["ok"] and result["errors"]["run_name"] == [f"run_name: {run_name_problem(name)}"]


# ---------------------------------------------------------------- 24: protocol details


def test_media_type_and_auth_scheme_ignore_case(ws):
    c = client(ws)
    body = {"base": "sft/configs/tiny.yaml", "values": {}}
    for kind in ("Application/JSON", "application/json; charset=UTF-8", "APPLICATION/JSON;charset=utf-8"):
        assert post(c, "/api/configs/check", body, kind).status_code == 200, kind
    locked = client(ws, token="s3cret", host="0.0.0.0")
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert locked.get("/api/runs/list", headers={"authorization": f"{scheme} s3cret"}).status_code == 200, scheme
    assert locked.get("/api/runs/list", headers={"authorization": "Basic s3cret"}).status_code == 401


def test_a_declared_upload_over_the_limit_is_a_413_before_anything_else(ws):
    c = client(ws)
    (ws / "data" / "taken.jsonl").write_text("{}\n")
    for name in ("big.jsonl", "taken.jsonl"):  # was: 409 for a taken name (and uvicorn's 400 at times)
        r = c.post("/api/data/upload", params={"name": name}, content=b"{}\n",
                   headers={"content-type": "application/octet-stream", "content-length": str(3 * 2**30)})
        refused(r, 413, "over the upload limit")


def test_a_chat_setting_that_is_not_a_number_is_refused_by_name(ws):
    c = raw_client(ws)
    msgs = [{"role": "user", "content": "hi"}]
    r = post(c, "/api/chat/generate", {"model": "m", "messages": msgs, "sampling": {"temperature": "abc"}})
    assert refused(r, 400, "temperature: expected a number, got 'abc'")["fields"] == {"temperature": ["temperature: "
                                                                                                      "expected a "
                                                                                                      "number"]}
    r = post(c, "/api/chat/generate", {"model": "m", "messages": msgs, "temperature": "abc"})
    refused(r, 400, "temperature: not a generation setting")
    for bad in (float("nan"), float("inf")):
        refused(c.post("/api/chat/generate", content=json.dumps({"model": "m", "messages": msgs,
                                                                 "sampling": {"top_k": bad}}).encode(),
                       headers={"content-type": "application/json"}), 400, "top_k: expected a whole number")
