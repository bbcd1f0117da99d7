"""Every /api endpoint of `qwen-sft ui`, in process (Starlette's TestClient), refusals included."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from starlette.testclient import TestClient

from qwen_sft import live
from qwen_sft.config import TrainConfig, dump_config, load_config
from qwen_sft.ui.application import create_app
from qwen_sft.ui.context import Settings
from qwen_sft.ui.server import allowed_hosts
from tests.ui.conftest import make_workspace, tiny_config, write_live

PORT = 7870
BASE = f"http://127.0.0.1:{PORT}"
HUB_MODEL = {"model_name_or_path": "Qwen/Qwen3-4B"}  # a hub id: passes the UI's rules without a local model


def client(ws, token=None, allow_remote_code=False, host="127.0.0.1") -> TestClient:
    settings = Settings(workspace=ws, host=host, port=PORT, token=token, allowed_hosts=allowed_hosts(host, PORT, []),
                        allow_remote_code=allow_remote_code, poll_s=0.05)
    return TestClient(create_app(settings), base_url=BASE)


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path / "ws")


def check(c, values, base="sft/configs/tiny.yaml"):
    r = c.post("/api/configs/check", json={"base": base, "values": values})
    assert r.status_code == 200, r.text
    return r.json()


def running_record(pid=None, **over):
    pid = pid or os.getpid()
    return {"status": "running", "phase": "setup", "pid": pid, "pid_start": live.process_start_time(pid),
            "host": socket.gethostname(), "config": {**tiny_config(), **over}}


# ---------------------------------------------------------------- the security layer


def test_wrong_host_is_refused_everywhere(ws):
    c = client(ws)
    for path in ("/", "/api/runs/list", "/static/app.js", "/api/configs/schema"):
        assert c.get(path, headers={"host": "attacker.example:7870"}).status_code == 403, path
        assert c.get(path).status_code == 200, path
    assert c.get("/", headers={"host": f"localhost:{PORT}"}).status_code == 200
    assert c.get("/", headers={"host": "127.0.0.1:9999"}).status_code == 403  # another port: not us


def test_cross_origin_and_non_json_posts_are_refused(ws):
    c = client(ws)
    body = {"base": "sft/configs/tiny.yaml", "values": {}}
    assert c.post("/api/configs/check", json=body, headers={"origin": "http://evil.example"}).status_code == 403
    assert c.post("/api/configs/check", json=body, headers={"origin": BASE}).status_code == 200
    assert c.get("/api/runs/list", headers={"origin": "http://evil.example"}).status_code == 403
    # A cross-site form post: no JSON, and a browser marks it cross-site.
    assert (
        c.post(
            "/api/runs/stop", content=b"run=x", headers={"content-type": "application/x-www-form-urlencoded"}
        ).status_code
        == 415
    )
    assert c.post("/api/runs/stop", json={"run": "x"}, headers={"sec-fetch-site": "cross-site"}).status_code == 403


def test_security_headers(ws):
    r = client(ws).get("/")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    assert "/static/app.js" in r.text and "http" not in r.text.replace('name="viewport"', "")  # no asset from elsewhere


def test_token_is_exchanged_for_an_httponly_strict_cookie(ws):
    c = client(ws, token="s3cret-token", host="0.0.0.0")
    assert c.get("/api/runs/list").status_code == 401
    assert c.get("/").status_code == 401
    assert c.get("/?token=wrong", follow_redirects=False).status_code == 401
    assert c.get("/?token=s3cr\u00e9t", follow_redirects=False).status_code == 401  # non-ASCII: wrong, not an error
    r = c.get("/?token=s3cret-token&x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?x=1"  # the token leaves the address bar
    cookie = r.headers["set-cookie"]
    assert (
        cookie.startswith(f"qwen_sft_ui_{PORT}=s3cret-token;") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    )
    assert c.get("/api/runs/list").status_code == 200  # the client keeps the cookie
    fresh = client(ws, token="s3cret-token", host="0.0.0.0")
    assert fresh.get("/api/runs/list", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
    assert fresh.get("/api/runs/list", headers={"authorization": "Bearer nope"}).status_code == 401
    assert fresh.get("/api/runs/list", headers={"cookie": f"qwen_sft_ui_{PORT}=nope"}).status_code == 401
    assert fresh.get("/api/runs/list", headers={"cookie": "qwen_sft_ui_1234=s3cret-token"}).status_code == 401


def test_allowed_hosts_for_loopback_and_all_addresses():
    assert allowed_hosts("127.0.0.1", 8000, []) == {"localhost:8000", "127.0.0.1:8000", "[::1]:8000"}
    everywhere = allowed_hosts("0.0.0.0", 8000, ["gpu-box.lan"])
    assert {f"{socket.gethostname().lower()}:8000", "gpu-box.lan:8000", "127.0.0.1:8000"} <= everywhere


def test_static_files_stay_in_the_package(ws):
    c = client(ws)
    assert c.get("/static/chart.js").status_code == 200
    for path in ("/static/../security.py", "/static/%2e%2e/security.py", "/static/..%2fsecurity.py"):
        assert c.get(path).status_code == 404, path


# ---------------------------------------------------------------- the start form


def test_schema_is_trainconfig_fields_and_help(ws):
    fields = client(ws).get("/api/configs/schema").json()["fields"]
    assert [f["name"] for f in fields] == [f.name for f in dataclasses.fields(TrainConfig)]
    by = {f["name"]: f for f in fields}
    assert by["learning_rate"]["help"] == TrainConfig.__dataclass_fields__["learning_rate"].metadata["help"]
    assert by["lr_scheduler_type"]["choices"] == ["cosine", "linear", "constant"]  # the field's choices
    assert by["liger_kernel"]["choices"] == ["auto", "true", "false"] and by["liger_kernel"]["kind"] == "choice"
    # lora_target_modules has choices for its single value but takes a list: typed, not a select
    assert by["lora_target_modules"]["kind"] == "text" and by["lora_target_modules"]["choices"] is None
    assert by["data_format"]["choices"][0] == "null" and by["bf16"]["kind"] == "bool"
    assert by["lora_rank"]["section"] == "LoRA" and by["run_name"]["section"] == "Outputs and resume"
    assert by["trust_remote_code"]["locked"] is True
    assert client(ws, allow_remote_code=True).get("/api/configs/schema").json()["fields"][1]["locked"] is False


def test_bases_list_workspace_package_and_run_configs(ws):
    run = ws / "runs" / "old"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_config(run_name="old")))
    (run / "data_report.json").write_text("{}")
    ids = [b["id"] for b in client(ws).get("/api/configs/bases").json()["bases"]]
    assert ids[0] == "sft/configs/tiny.yaml"
    assert "package:lora_config.yaml" in ids and "runs/old/config.yaml" in ids


def test_check_is_the_cli_validation_with_errors_by_field(ws):
    c = client(ws)
    # A value of the wrong type stops before the range checks, as on the command line.
    assert check(c, {"learning_rate": "fast", "lora_rank": "0"})["errors"] == {
        "learning_rate": ["learning_rate: expected a number, got 'fast'"]}
    result = check(c, {"lora_rank": "0", "warmup_ratio": "2"})
    assert not result["ok"] and result["errors"] == {"lora_rank": ["lora_rank: must be > 0, got 0"],
                                                     "warmup_ratio": ["warmup_ratio: must be in [0, 1), got 2.0"]}
    assert check(c, {"not_a_key": "1"})["general"] == ["not_a_key: not a training config field"]


def test_check_valid_gives_yaml_and_the_equivalent_command(ws):
    (ws / "models").mkdir()  # models/tiny names a local directory (its first folder exists), which is missing
    errors = check(client(ws), {})["errors"]
    assert errors == {"model_name_or_path": ["model_name_or_path: models/tiny not found in the workspace"]}
    values = {"learning_rate": "1e-4", "lora_target_modules": "q_proj, v_proj", "run_name": "my-run", **HUB_MODEL}
    result = check(client(ws), values)
    assert result["ok"], result
    expected = load_config(ws / "sft/configs/tiny.yaml", [f"{k}={v}" for k, v in values.items()])
    assert result["yaml"] == dump_config(expected)
    assert result["command"] == (
        "qwen-sft train sft/configs/tiny.yaml learning_rate=1e-4 "
        "'lora_target_modules=q_proj, v_proj' run_name=my-run model_name_or_path=Qwen/Qwen3-4B"
    )
    assert result["values"]["lora_target_modules"] == "q_proj, v_proj" and result["run_dir"] == "runs/my-run"
    assert "argv" not in result


@pytest.mark.parametrize("key,value", [("dataset", "/etc/passwd"), ("dataset", "../outside.jsonl"),
                                       ("output_dir", "/tmp"), ("output_dir", "../.."),
                                       ("model_name_or_path", "/usr/lib"), ("resume_from_checkpoint", "/tmp"),
                                       ("run_name", "a/../../b")])
def test_paths_outside_the_workspace_are_refused(ws, key, value):
    result = check(client(ws), {key: value, **HUB_MODEL} if key != "model_name_or_path" else {key: value})
    assert not result["ok"]
    assert any("outside the workspace" in e or "must name a directory inside output_dir" in e
               for e in result["errors"][key]), result["errors"]


def test_symlink_out_of_the_workspace_is_refused(ws, tmp_path):
    (tmp_path / "secret.jsonl").write_text("{}\n")
    (ws / "data" / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    result = check(client(ws), {"dataset": "data/link.jsonl", **HUB_MODEL})
    assert "outside the workspace" in result["errors"]["dataset"][0]


def test_base_outside_the_workspace_is_refused(ws, tmp_path):
    (tmp_path / "evil.yaml").write_text("lora_rank: 4\n")
    for base in ("../evil.yaml", str(tmp_path / "evil.yaml")):
        r = client(ws).post("/api/configs/check", json={"base": base, "values": {}})
        assert r.status_code == 403 and "outside the workspace" in r.json()["error"]
    assert client(ws).post("/api/configs/check", json={"base": "package:../x.yaml", "values": {}}).status_code == 404


def test_trust_remote_code_needs_the_server_flag(ws):
    result = check(client(ws), {"trust_remote_code": "true", **HUB_MODEL})
    assert "--allow-remote-code" in result["errors"]["trust_remote_code"][0]
    (ws / "sft/configs/remote.yaml").write_text(yaml.safe_dump(tiny_config(trust_remote_code=True, **HUB_MODEL)))
    from_base = check(client(ws), {}, base="sft/configs/remote.yaml")
    assert "set by the base config" in from_base["errors"]["trust_remote_code"][0]
    assert check(client(ws, allow_remote_code=True), {"trust_remote_code": "true", **HUB_MODEL})["ok"]


def test_a_finished_or_busy_run_dir_is_refused(ws):
    (ws / "runs" / "tiny").mkdir(parents=True)
    (ws / "runs" / "tiny" / "metrics.json").write_text("{}")
    assert "already holds a finished run" in check(client(ws), HUB_MODEL)["errors"]["run_name"][0]
    (ws / "runs" / "halfway" / "checkpoint-2").mkdir(parents=True)
    (ws / "runs" / "halfway" / "checkpoint-2" / "COMPLETE").write_text("{}")
    assert (
        "holds checkpoints of an unfinished run"
        in check(client(ws), {"run_name": "halfway", **HUB_MODEL})["errors"]["run_name"][0]
    )
    assert check(client(ws), {"run_name": "halfway", "resume_from_checkpoint": "auto", **HUB_MODEL})["ok"]
    write_live(ws / "runs" / "busy", [running_record()])  # this test process plays a trainer that runs
    assert "a trainer is running" in check(client(ws), {"run_name": "busy", **HUB_MODEL})["errors"]["run_name"][0]


def test_start_refuses_an_invalid_config_with_field_errors(ws):
    r = client(ws).post("/api/runs/start", json={"base": "sft/configs/tiny.yaml", "values": {"lora_rank": "-1"}})
    assert r.status_code == 422 and r.json()["fields"]["lora_rank"] == ["lora_rank: must be > 0, got -1"]
    assert not (ws / "runs").exists()  # nothing created


# ---------------------------------------------------------------- runs


def make_runs(ws):
    """a: finished, b: died (a pid that has ended), c: running (this process), legacy: no live record."""
    a = write_live(
        ws / "runs" / "a",
        [
            running_record(),
            {
                "status": "running",
                "phase": "train",
                "step": 1,
                "total_steps": 2,
                "loss": 3.0,
                "lr": 1e-3,
                "tokens_per_second": 100.0,
            },
            {
                "status": "running",
                "phase": "train",
                "step": 2,
                "total_steps": 2,
                "loss": 2.0,
                "eval_loss": 2.5,
                "lr": 5e-4,
                "memory_gb": 1.5,
            },
            {
                "status": "finished",
                "step": 2,
                "metrics": {
                    "final_train_loss": 2.0,
                    "eval_loss": 2.5,
                    "train_tokens_per_second": 90.0,
                    "peak_memory_gb": 1.5,
                },
            },
        ],
    )
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = live.process_start_time(child.pid)
    child.wait()
    b = write_live(
        ws / "runs" / "b",
        [
            {**running_record(learning_rate=5e-4), "pid": child.pid, "pid_start": start},
            {"status": "running", "phase": "train", "step": 1, "total_steps": 4, "loss": 3.5},
        ],
    )
    c = write_live(
        ws / "runs" / "c",
        [
            running_record(run_name="c"),
            {"status": "running", "phase": "train", "step": 3, "total_steps": 9, "eta_s": 12},
        ],
    )
    legacy = ws / "elsewhere" / "legacy"
    legacy.mkdir(parents=True)
    (legacy / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    (legacy / "metrics.json").write_text(json.dumps({"train_steps": 2, "final_train_loss": 1.25}))
    (legacy / "loss_history.json").write_text(
        json.dumps([{"step": 1, "loss": 2.0, "lr": 1e-3}, {"step": 2, "loss": 1.25}, {"step": 2, "eval_loss": 1.5}])
    )
    return a, b, c, legacy


def test_runs_list_reads_every_run_directory(ws):
    make_runs(ws)
    runs = {r["id"]: r for r in client(ws).get("/api/runs/list").json()["runs"]}
    assert set(runs) == {"runs/a", "runs/b", "runs/c", "elsewhere/legacy"}
    a = runs["runs/a"]
    assert (a["status"], a["step"], a["loss"], a["eval_loss"], a["tokens_per_second"], a["memory_gb"]) == \
        ("finished", 2, 2.0, 2.5, 90.0, 1.5)
    assert a["base_model"] == "models/tiny" and a["settings"]["lora_rank"] == 4 and a["dataset"] == "data/train.jsonl"
    assert runs["runs/b"]["status"] == "died" and "ended without a final status" in runs["runs/b"]["error"]
    c = runs["runs/c"]
    assert (c["status"], c["alive"], c["step"], c["total_steps"], c["eta_s"]) == ("running", True, 3, 9, 12)
    legacy = runs["elsewhere/legacy"]
    assert (legacy["status"], legacy["loss"], legacy["eval_loss"]) == ("finished", 1.25, 1.5)


def test_detail_and_its_refusals(ws):
    make_runs(ws)
    c = client(ws)
    d = c.get("/api/runs/detail", params={"run": "runs/a"}).json()
    assert [p["step"] for p in d["points"]] == [1, 2] and d["points"][1]["eval_loss"] == 2.5
    assert d["config"]["run_name"] == "tiny" and d["can_stop"] is False and d["can_resume"] is False
    legacy = c.get("/api/runs/detail", params={"run": "elsewhere/legacy"}).json()
    assert legacy["points"] == [{"step": 1, "loss": 2.0, "lr": 1e-3}, {"step": 2, "loss": 1.25, "eval_loss": 1.5}]
    assert c.get("/api/runs/detail", params={"run": "../.."}).status_code == 403
    assert c.get("/api/runs/detail", params={"run": "/etc"}).status_code == 403
    assert c.get("/api/runs/detail", params={"run": "data"}).status_code == 404
    assert c.get("/api/runs/detail").status_code == 400
    assert c.get("/api/runs/log", params={"run": "runs/a"}).json() == {"lines": []}
    assert c.get("/api/runs/log", params={"run": "../x"}).status_code == 403


def test_compare_gives_curves_and_config_differences(ws):
    make_runs(ws)
    r = client(ws).get("/api/runs/compare", params=[("run", "runs/a"), ("run", "runs/b")]).json()
    assert [x["id"] for x in r["runs"]] == ["runs/a", "runs/b"]
    assert [p["loss"] for p in r["runs"][1]["points"]] == [3.5]
    assert r["differences"] == [{"key": "learning_rate", "values": [1e-3, 5e-4]}]
    assert client(ws).get("/api/runs/compare").status_code == 400
    assert client(ws).get("/api/runs/compare", params={"run": "../../etc"}).status_code == 403


def test_resume_refusals(ws):
    make_runs(ws)
    c = client(ws)
    assert c.post("/api/runs/resume", json={"run": "runs/c"}).status_code == 409  # running
    r = c.post("/api/runs/resume", json={"run": "runs/b"})  # died before any checkpoint
    assert r.status_code == 409 and "no complete checkpoint" in r.json()["error"]
    assert c.post("/api/runs/resume", json={"run": "runs/a"}).status_code == 409  # finished
    assert c.post("/api/runs/resume", json={"run": "../../tmp"}).status_code == 403


def test_stop_signals_the_named_process_once_then_again(ws, tmp_path):
    """Stop sends SIGINT to the trainer's pid (and nothing else); a second Stop sends it again."""
    got = tmp_path / "signals"
    script = ("import signal, sys, time\n"
              f"def h(s, f): open({str(got)!r}, 'a').write(str(s) + chr(10))\n"
              "signal.signal(signal.SIGINT, h)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        write_live(ws / "runs" / "cli", [running_record(pid=child.pid),  # training: past its first step
                                         {"status": "running", "phase": "train", "step": 1, "total_steps": 9}])
        c = client(ws)
        assert c.get("/api/runs/detail", params={"run": "runs/cli"}).json()["can_stop"] is True
        first = c.post("/api/runs/stop", json={"run": "runs/cli"}).json()
        assert first["stops"] == 1 and "checkpoint at the next step boundary" in first["message"]
        assert c.get("/api/runs/detail", params={"run": "runs/cli"}).json()["status"] == "stopping"
        assert c.post("/api/runs/stop", json={"run": "runs/cli"}).json()["stops"] == 2
        end = time.time() + 10
        while got.read_text().split() != [str(int(signal.SIGINT))] * 2 if got.exists() else True:
            assert time.time() < end, "the process did not get two SIGINTs"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert c.post("/api/runs/stop", json={"run": "runs/cli"}).status_code == 409  # ended: nothing to stop
    assert c.post("/api/runs/stop", json={"run": "../.."}).status_code == 403


def test_a_run_on_another_host_is_shown_not_stopped(ws):
    write_live(ws / "runs" / "remote", [{**running_record(), "host": "other-node"}])
    c = client(ws)
    d = c.get("/api/runs/detail", params={"run": "runs/remote"}).json()
    assert d["status"] == "running" and d["alive"] is None and d["can_stop"] is False
    r = c.post("/api/runs/stop", json={"run": "runs/remote"})
    assert r.status_code == 409 and "other-node" in r.json()["error"]


@pytest.mark.slow
def test_start_runs_qwen_sft_train_in_its_own_session_and_it_finishes(tmp_path):
    """A real trainer on the tiny model: argv list, the workspace as working directory, log and launch file."""
    ws = make_workspace(tmp_path / "ws", with_model=True)
    c = client(ws)
    r = c.post("/api/runs/start", json={"base": "sft/configs/tiny.yaml",
                                        "values": {"max_steps": "2", "run_name": "api-run", "val_size": "0"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"run": "runs/api-run", "command": "qwen-sft train sft/configs/tiny.yaml max_steps=2 "
                                                          "run_name=api-run val_size=0"}
    run = ws / "runs" / "api-run"
    launch = json.loads((run / "ui_launch.json").read_text())
    assert launch["argv"][1:] == ["-m", "qwen_sft.cli", "train", "sft/configs/tiny.yaml", "max_steps=2",
                                  "run_name=api-run", "val_size=0"]
    assert os.getsid(launch["pid"]) == launch["pid"] != os.getsid(0)  # a session of its own
    again = c.post("/api/runs/start", json={"base": "sft/configs/tiny.yaml", "values": {"run_name": "api-run"}})
    assert again.status_code == 422 and "a trainer is running" in again.json()["fields"]["run_name"][0]
    end = time.time() + 240
    while (d := c.get("/api/runs/detail", params={"run": "runs/api-run"}).json())["status"] != "finished":
        assert d["status"] in ("starting", "running"), d
        assert time.time() < end, d
        time.sleep(0.5)
    assert [p["step"] for p in d["points"] if "loss" in p] == [1, 2]
    assert any("done: adapter in" in line for line in d["log"])
    assert d["data_report_text"].startswith("rows read 24")


# ---------------------------------------------------------------- live events (a real server: streams do not end)


@pytest.fixture
def served(ws):
    import uvicorn

    settings = Settings(workspace=ws, port=0, poll_s=0.05, allowed_hosts=set())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    settings.port = sock.getsockname()[1]
    settings.allowed_hosts = allowed_hosts("127.0.0.1", settings.port, [])
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{settings.port}"
    server.should_exit = True
    thread.join(10)


def sse(response):
    """(event, data) pairs of a server-sent event stream."""
    event = None
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def test_events_send_the_whole_state_then_only_what_was_added(ws, served):
    run = write_live(ws / "runs" / "live", [running_record(), {"status": "running", "phase": "train", "step": 1,
                                                               "total_steps": 3, "loss": 3.0}])
    url = f"{served}/api/runs/events?run=runs/live"
    with urllib.request.urlopen(url, timeout=20) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r)
        got = dict([next(events), next(events)])
        assert [x["id"] for x in got["runs"]] == ["runs/live"]
        assert got["run"]["points_from"] == 0 and got["run"]["points"] == [{"step": 1, "loss": 3.0}]
        write_live(run, [{"status": "running", "phase": "train", "step": 2, "total_steps": 3, "loss": 2.0}])
        update = next(d for e, d in events if e == "run")
        assert update["points_from"] == 1 and update["points"] == [{"step": 2, "loss": 2.0}] and update["step"] == 2
    # a reconnection (a reload) starts with the whole state again
    with urllib.request.urlopen(url, timeout=20) as r:
        first_run = next(d for e, d in sse(r) if e == "run")
        assert [p["step"] for p in first_run["points"]] == [1, 2] and first_run["points_from"] == 0
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{served}/api/runs/events?run=../..", timeout=20)
    assert refused.value.code == 403


def test_a_resumed_session_replaces_the_steps_it_redoes(ws):
    train = lambda step, **v: {"status": "running", "phase": "train", "step": step, "total_steps": 6, **v}  # noqa: E731
    write_live(ws / "runs" / "r", [running_record(), train(1, loss=3.0, lr=1.0), train(2, loss=2.0, lr=2.0),
                                   train(3, loss=1.0, lr=3.0),  # killed after step 3; its checkpoint was step 2
                                   running_record(), train(2, eval_loss=2.2), train(3, loss=1.1, lr=3.0)])
    d = client(ws).get("/api/runs/detail", params={"run": "runs/r"}).json()
    assert d["points"] == [{"step": 1, "loss": 3.0, "lr": 1.0}, {"step": 2, "loss": 2.0, "lr": 2.0, "eval_loss": 2.2},
                           {"step": 3, "loss": 1.1, "lr": 3.0}]
