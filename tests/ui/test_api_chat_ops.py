"""/api/chat and /api/ops of `qwen-sft ui`, in process, on the tiny model and a tiny adapter: the chat workers
answer as `qwen-sft chat` does, a crash leaves the UI up, switching models ends the old worker; merge's and
eval's refusals (their runs from a run's page, and what /api/ops answers of them: tests/ui/test_browser_pages.py)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from qwen_sft import cli, merge
from qwen_sft.model import build_tiny_model
from qwen_sft.testing import build_tiny_adapter
from qwen_sft.ui import ops
from tests.ui.conftest import make_workspace, tiny_config, write_live
from tests.ui.test_api import client, running_record

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

PROMPT = "Tell me about the sea."


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("chat") / "ws", with_model=True)
    build_tiny_adapter(ws / "models" / "tiny", ws / "runs" / "r" / "lora_adapters", seed=3, scale=0.5)
    write_live(
        ws / "runs" / "r",
        [
            {
                "status": "running",
                "phase": "setup",
                "config": tiny_config(run_name="r"),
                "pid": 1,
                "pid_start": 1,
                "host": "elsewhere",
            },
            {"status": "finished", "metrics": {}},
        ],
    )
    return ws


@pytest.fixture(scope="module")
def c(ws):
    c = client(ws)
    yield c
    c.post("/api/chat/unload", json={})


def load(c, panes: list[str], timeout: float = 180) -> dict:
    r = c.post("/api/chat/load", json={"panes": panes})
    assert r.status_code == 200, r.text
    end = time.time() + timeout
    while True:
        state = c.get("/api/chat/state").json()
        if all(w["state"] != "loading" for w in state["workers"]):
            return state
        assert time.time() < end, state
        time.sleep(0.3)


def generate(c, model: str, on_text=None, **body) -> list[tuple[str, dict]]:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_new_tokens": 8,
            "sampling": {"do_sample": False}, **body}
    events = []
    with c.stream("POST", "/api/chat/generate", json=body) as r:
        assert r.status_code == 200, r.read()
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "text" and on_text:
                    on_text()
    return events


def expected_replies(ws, monkeypatch) -> tuple[str, str]:
    """`qwen-sft chat`'s greedy replies: the adapter, then its base (the same load, the adapter disabled)."""
    from qwen_sft.generate import generate_reply, load_for_chat

    monkeypatch.chdir(ws)
    model, tok, thinking = load_for_chat("runs/r/lora_adapters")
    messages = [{"role": "user", "content": PROMPT}]
    tuned = generate_reply(model, tok, messages, 8, thinking, greedy=True).text
    with model.disable_adapter():
        base = generate_reply(model, tok, messages, 8, thinking, greedy=True).text
    return base, tuned


def test_base_and_tuned_side_by_side_from_one_worker(ws, c, monkeypatch):
    state = load(c, ["models/tiny", "runs/r/lora_adapters"])
    assert [w["key"] for w in state["workers"]] == ["runs/r/lora_adapters"]  # the base is the adapter's, disabled
    assert state["panes"] == [{"model": "models/tiny", "worker": "runs/r/lora_adapters", "adapter": False},
                              {"model": "runs/r/lora_adapters", "worker": "runs/r/lora_adapters", "adapter": True}]
    info = state["workers"][0]["info"]
    gen = json.loads((ws / "models/tiny/generation_config.json").read_text())
    assert info["sampling"] == {k: gen.get(k) for k in ("do_sample", "temperature", "top_p", "top_k")}
    assert info["enable_thinking"] is False and info["modes"] == [False, True] and info["template_kind"] == "hybrid"
    base, tuned = expected_replies(ws, monkeypatch)
    assert base != tuned
    for model, want in (("models/tiny", base), ("runs/r/lora_adapters", tuned)):
        events = generate(c, model)
        names = [n for n, _ in events]
        assert names[0] == "start" and names[-1] == "done" and "text" in names
        done = events[-1][1]
        assert done["text"].strip() == want and done["new_tokens"] == 8 and not done["cancelled"]
        assert "".join(e["text"] for n, e in events if n == "text") == done["text"]  # streamed as written


def test_refusals_of_the_chat_area(ws, c):
    load(c, ["runs/r/lora_adapters"])
    assert c.post("/api/chat/load", json={"panes": ["/etc"]}).status_code == 403
    assert c.post("/api/chat/load", json={"panes": ["a", "b", "c"]}).status_code == 400
    r = c.post("/api/chat/generate", json={"model": "models/other", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 409 and "not loaded" in r.json()["error"]
    bad = [
        ({"sampling": {"do_sample": True, "temperature": 0}}, "temperature"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        ({"enable_thinking": "yes"}, "enable_thinking"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
    ]
    for change, key in bad:
        body = {"model": "runs/r/lora_adapters", "messages": [{"role": "user", "content": "x"}], **change}
        r = c.post("/api/chat/generate", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith(key), (change, r.text)


def test_switching_models_ends_the_old_worker_and_a_crash_leaves_the_ui_up(ws, c):
    # (the adapter's worker is up from the tests above when they ran first on this xdist worker: not started again)
    first = load(c, ["runs/r/lora_adapters"])["workers"][0]
    state = load(c, ["models/tiny"])
    assert [w["key"] for w in state["workers"]] == ["models/tiny"] and state["panes"][0]["adapter"] is None
    end = time.time() + 30
    while (
        os.path.exists(f"/proc/{first['pid']}") and open(f"/proc/{first['pid']}/stat").read().split(") ")[1][0] != "Z"
    ):
        assert time.time() < end, "the worker no pane uses still runs"
        time.sleep(0.2)
    pid = state["workers"][0]["pid"]
    killed = []

    def kill_once():
        if not killed:
            killed.append(True)
            os.kill(pid, signal.SIGKILL)  # a crash mid-generation (out of memory, a segfault)

    events = generate(c, "models/tiny", on_text=kill_once, max_new_tokens=4000)
    name, last = events[-1]
    assert name == "error" and last["message"].startswith("the model worker ended (signal 9)")
    state = c.get("/api/chat/state").json()  # the UI is up, and says what happened
    assert state["workers"][0]["state"] == "crashed" and state["workers"][0]["error"] == last["message"]
    r = c.post("/api/chat/generate", json={"model": "models/tiny", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 409 and "signal 9" in r.json()["error"]
    assert load(c, ["models/tiny"])["workers"][0]["state"] == "ready"  # Load starts a fresh one
    assert generate(c, "models/tiny")[-1][0] == "done"


def test_a_mode_the_model_cannot_serve_is_the_clis_refusal(ws, c, monkeypatch, capsys):
    build_tiny_model(ws / "models" / "inst", variant="instruct-2507")
    monkeypatch.chdir(ws)
    capsys.readouterr()
    assert cli.main(["chat", "models/inst", "--prompt", "hi", "--enable_thinking", "--max_new_tokens", "1"]) == 2
    refusal = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("error: ")
    assert refusal.startswith("enable_thinking: true, but models/inst is never-thinking")
    load(c, ["models/inst"])
    events = generate(c, "models/inst", enable_thinking=True)
    assert events[-1] == ("error", {"event": "error", "id": events[0][1]["id"], "message": refusal})
    assert generate(c, "models/inst", enable_thinking=False)[-1][0] == "done"  # the worker lives on


# ---------------------------------------------------------------- merge and eval


# A merge with validation, then an eval, from a run, through /api/ops: tested in tests/ui/test_browser_pages.py
# (test_merge_with_validation_and_eval_from_the_run_page), whose page starts the same jobs.


def test_refusals_of_merge_and_eval(ws, c):
    assert ops.DTYPE_NAMES == tuple(merge.DTYPES)
    write_live(ws / "runs" / "busy", [running_record(run_name="busy")])
    (ws / "runs" / "busy" / "lora_adapters").mkdir()
    r = c.post("/api/ops/merge", json={"run": "runs/busy"})
    assert r.status_code == 409 and "still training" in r.json()["error"]
    write_live(ws / "runs" / "none", [{"status": "failed", "error": "x"}])
    r = c.post("/api/ops/eval", json={"run": "runs/none", "data": ["data/train.jsonl"]})
    assert r.status_code == 409 and "no saved adapter" in r.json()["error"]
    assert c.post("/api/ops/merge", json={"run": "../x"}).status_code == 403
    assert c.post("/api/ops/merge", json={"run": "runs/r", "dtype": "int4"}).status_code == 400
    r = c.post("/api/ops/eval", json={"run": "runs/r", "data": ["/etc/passwd"]})
    assert r.status_code == 403 and "outside the workspace" in r.json()["error"]
    assert c.post("/api/ops/eval", json={"run": "runs/r", "data": []}).status_code == 400
    assert c.post("/api/ops/eval", json={"run": "runs/r", "data": ["data/train.jsonl"], "n": -1}).status_code == 400
    assert c.get("/api/ops/status", params={"run": "runs/nothing"}).status_code == 404


def test_symbolic_links_in_a_run_are_never_followed(ws, c, tmp_path):
    """A workspace from elsewhere may hold runs whose files are links out of it: merge --overwrite must not replace
    what `merged` points to, eval must not write through `eval`, no log is appended to or shown through a link."""
    import shutil

    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "precious.txt").write_text("keep me")
    (outside / "evaldir").mkdir()
    (outside / "evaldir" / "metrics.json").write_text(json.dumps({"base": {"loss": 1}, "tuned": {"loss": 2}}))
    (outside / "secret.txt").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    run = ws / "runs" / "linked"
    shutil.copytree(ws / "runs" / "r" / "lora_adapters", run / "lora_adapters")
    write_live(run, [{"status": "finished", "metrics": {}}])
    links = {"merged": outside / "victim", "eval": outside / "evaldir", "merge.log": outside / "secret.txt",
             "eval.log": outside / "secret.txt", "train.log": outside / "secret.txt"}
    for name, target in links.items():
        (run / name).symlink_to(target)

    status = c.get("/api/ops/status", params={"run": "runs/linked"}).json()
    assert status["adapter"] == "runs/linked/lora_adapters"
    assert status["merged"]["exists"] is False and status["merged"]["log"] == []
    assert status["eval"]["result"] is None and status["eval"]["log"] == []
    assert c.get("/api/ops/generations", params={"run": "runs/linked"}).json() == {"rows": []}
    assert c.get("/api/runs/log", params={"run": "runs/linked"}).json() == {"lines": []}  # the run page's log tail
    (outside / "live.jsonl").write_text(json.dumps({"status": "running", "step": 3}) + "\n")
    (run / "live.jsonl").unlink()
    (run / "live.jsonl").symlink_to(outside / "live.jsonl")  # not the run's record: its saved files speak
    assert c.get("/api/runs/detail", params={"run": "runs/linked"}).json()["status"] != "running"
    assert "PRIVATE KEY" not in c.get("/api/runs/detail", params={"run": "runs/linked"}).text
    r = c.post("/api/ops/merge", json={"run": "runs/linked", "overwrite": True, "dtype": "float32"})
    assert r.status_code == 409 and "linked/merged is a symbolic link" in r.json()["error"]
    r = c.post("/api/ops/eval", json={"run": "runs/linked", "data": ["data/train.jsonl"]})
    assert r.status_code == 409 and "linked/eval is a symbolic link" in r.json()["error"]
    (run / "merged").unlink()
    r = c.post("/api/ops/merge", json={"run": "runs/linked", "dtype": "float32"})  # now only its log is a link
    assert r.status_code == 409 and "linked/merge.log is a symbolic link" in r.json()["error"]
    assert sorted(p.name for p in (outside / "victim").iterdir()) == ["precious.txt"]
    assert (outside / "secret.txt").read_text() == "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    (run / "lora_adapters").rename(tmp_path / "adapter")
    (run / "lora_adapters").symlink_to(tmp_path / "adapter")  # a model from outside the workspace
    assert c.get("/api/ops/status", params={"run": "runs/linked"}).json()["adapter"] is None
    r = c.post("/api/ops/eval", json={"run": "runs/linked", "data": ["data/train.jsonl"]})
    assert r.status_code == 409 and "linked/lora_adapters is a symbolic link" in r.json()["error"]
