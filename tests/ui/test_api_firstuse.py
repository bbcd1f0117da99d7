"""The API behind #23's first-time-user pages: the trash, the comparison's differences, a failed launch's settings,
an invalid row's raw text, the eval's held-out data. In process (Starlette's TestClient)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

import pytest

from qwen_sft import runlock
from tests.ui.conftest import make_workspace, tiny_config, write_live
from tests.ui.test_api import client, running_record


@pytest.fixture
def ws(tmp_path):
    return make_workspace(tmp_path / "ws")


def finished(ws, name, **config):
    return write_live(
        ws / "runs" / name,
        [
            {"status": "running", "phase": "setup", "config": {**tiny_config(), **config}},
            {"status": "finished", "step": 6, "metrics": {"train_steps": 6}},
        ],
    )


def names(c):
    return sorted(r["id"] for r in c.get("/api/runs/list").json()["runs"])


# ---------------------------------------------------------------- trash


def test_trash_moves_a_run_aside_and_undo_brings_it_back(ws):
    c = client(ws)
    run = finished(ws, "a")
    (run / "adapter.bin").write_bytes(b"weights")
    assert names(c) == ["runs/a"]
    r = c.post("/api/trash/put", json={"run": "runs/a"})
    assert r.status_code == 200, r.text
    moved = ws / r.json()["to"]
    assert r.json()["to"].startswith(".trash/") and (moved / "adapter.bin").read_bytes() == b"weights"
    assert not run.exists()
    assert names(c) == []  # gone from the runs table at once
    listed = c.get("/api/trash/list").json()["entries"]
    assert [(e["id"], e["run"]) for e in listed] == [(r.json()["id"], "runs/a")]

    back = c.post("/api/trash/restore", json={"id": r.json()["id"]})
    assert back.status_code == 200, back.text
    assert (run / "adapter.bin").read_bytes() == b"weights"
    assert names(c) == ["runs/a"]
    assert c.get("/api/trash/list").json()["entries"] == []
    assert list((ws / ".trash").iterdir()) == []


def test_trash_refuses_a_run_whose_lock_is_held(ws):
    c = client(ws)
    run = finished(ws, "a")
    fd = os.open(run / runlock.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        r = c.post("/api/trash/put", json={"run": "runs/a"})
        assert r.status_code == 409
        assert r.json()["error"].startswith("runs/a was not moved: a trainer holds its lock (pid ")
        assert run.is_dir() and names(c) == ["runs/a"]
    finally:
        os.close(fd)
    assert c.post("/api/trash/put", json={"run": "runs/a"}).status_code == 200  # released: moved


def test_trash_refuses_a_running_run_and_follows_no_link(ws, tmp_path):
    c = client(ws)
    write_live(ws / "runs" / "live", [running_record()])  # this process, alive: a trainer by its record
    r = c.post("/api/trash/put", json={"run": "runs/live"})
    assert r.status_code == 409 and "stop it first" in r.json()["error"]

    elsewhere = finished(ws, "real")
    (ws / "linked").symlink_to(elsewhere.parent)  # the run named through a link
    r = c.post("/api/trash/put", json={"run": "linked/real"})
    assert r.status_code == 409 and "symbolic link" in r.json()["error"]
    assert elsewhere.is_dir()

    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / ".trash").symlink_to(outside)  # a trash that leads out of the workspace
    r = c.post("/api/trash/put", json={"run": "runs/real"})
    assert r.status_code == 409 and ".trash in the workspace is not a folder of its own" in r.json()["error"]
    assert elsewhere.is_dir() and list(outside.iterdir()) == []

    finished(ws, "lock")
    (ws / "runs" / "lock" / runlock.LOCK_NAME).symlink_to(tmp_path / "user-file")
    r = c.post("/api/trash/put", json={"run": "runs/lock"})
    assert r.status_code == 409 and "is not a regular file" in r.json()["error"]


def test_restore_refuses_a_taken_name_and_foreign_entries(ws):
    c = client(ws)
    finished(ws, "a")
    tid = c.post("/api/trash/put", json={"run": "runs/a"}).json()["id"]
    finished(ws, "a", learning_rate=0.5)  # a new run under the same name meanwhile
    r = c.post("/api/trash/restore", json={"id": tid})
    assert (
        r.status_code == 409 and r.json()["error"] == "runs/a exists again; restored nothing (move or rename it first)"
    )
    for bad in ("../x", "", ".hidden", 5, None):
        assert c.post("/api/trash/restore", json={"id": bad}).status_code in (400, 404), bad
    (ws / ".trash" / "user-folder").mkdir()  # not one of ours (no record): not listed, not restorable
    assert [e["id"] for e in c.get("/api/trash/list").json()["entries"]] == [tid]
    assert c.post("/api/trash/restore", json={"id": "user-folder"}).status_code == 404


# ---------------------------------------------------------------- compare


def test_compare_shows_no_false_differences(ws):
    c = client(ws)
    # a: enable_thinking auto, resolved by the trainer to false in its config.yaml; 3 epochs as an int.
    a = finished(ws, "a", enable_thinking="auto", num_train_epochs=3, max_steps=0)
    (a / "config.yaml").write_text("enable_thinking: false\nnum_train_epochs: 3\n")
    # b: a new run from a's config.yaml (false), 3.0 epochs, resumed once (resume_from_checkpoint auto).
    finished(ws, "b", enable_thinking=False, num_train_epochs=3.0, max_steps=0, resume_from_checkpoint="auto",
             learning_rate=0.0003)
    r = c.get("/api/runs/compare?run=runs/a&run=runs/b")
    assert r.status_code == 200, r.text
    assert r.json()["differences"] == [{"key": "learning_rate", "values": [0.001, 0.0003]}]
    # A real difference of a resolved "auto" is one.
    finished(ws, "t", enable_thinking=True, num_train_epochs=3, max_steps=0)
    assert [d["key"] for d in c.get("/api/runs/compare?run=runs/a&run=runs/t").json()["differences"]] == [
        "enable_thinking"
    ]


# ---------------------------------------------------------------- launch settings, raw rows, held-out data


def test_a_failed_launch_keeps_its_settings_for_retry(ws):
    c = client(ws)
    run = write_live(ws / "runs" / "bad", [{"status": "running", "phase": "setup", "config": tiny_config()},
                                           {"status": "failed", "error": "data/bad.jsonl:1: output: empty"}])
    (run / "ui_launch.json").write_text(
        json.dumps(
            {
                "argv": [
                    "python",
                    "-m",
                    "qwen_sft.cli",
                    "train",
                    "sft/configs/tiny.yaml",
                    "dataset=data/bad.jsonl",
                    "lr_note=a=b",
                ],
                "pid": 1,
                "time": 0.0,
                "host": "elsewhere",
            }
        )
    )
    d = c.get("/api/runs/detail?run=runs/bad").json()
    assert d["config_file"] is None
    assert d["retry"] == {"base": "sft/configs/tiny.yaml", "values": {"dataset": "data/bad.jsonl", "lr_note": "a=b"}}
    from qwen_sft.ui.configs import launch_values, package_configs

    name, path = next(iter(package_configs().items()))
    assert launch_values(["py", "-m", "qwen_sft.cli", "train", str(path)]) == {"base": f"package:{name}", "values": {}}
    for bad in (None, "train", ["train"], [1, 2], ["py", "x"]):
        assert launch_values(bad) is None


def test_an_invalid_row_comes_with_its_raw_text(ws):
    c = client(ws)
    (ws / "data" / "bad.jsonl").write_text('{"instruction": "q", "output": ""}\nnot json \xe9\n')
    r = c.get("/api/data/row?file=data/bad.jsonl&index=1")
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is False and r.json()["raw"] == "not json \xe9"
    assert c.get("/api/data/row?file=data/bad.jsonl&index=0").json()["raw"] == '{"instruction": "q", "output": ""}'
    (ws / "data" / "bad.csv").write_text('instruction,output\n"two\nlines",\n')
    row = c.get("/api/data/row?file=data/bad.csv&index=0").json()
    assert row["ok"] is False and row["raw"] == '"two\nlines",'


def test_a_search_or_a_page_does_not_build_raw_text(ws, monkeypatch):
    """The raw text is for the row view of an invalid row: a search of the whole file, or a page of the table, read
    each row's bytes once (a search of 200,000 JSONL rows spent 0.5 s of its 9 s decoding raw text it dropped, and
    a Parquet page or search serialised every row to JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qwen_sft.ui import datafiles

    c = client(ws)
    pq.write_table(pa.table({"instruction": ["q1", "q2"], "output": ["a1", ""]}), ws / "data" / "t.parquet")
    real = datafiles._raw_text

    def not_here(chunk):
        raise AssertionError("raw text built for a row nobody shows")

    monkeypatch.setattr(datafiles, "_raw_text", not_here)
    for f in ("data/train.jsonl", "data/t.parquet"):
        with c.stream("GET", "/api/data/search", params={"file": f, "q": "zzz-nowhere"}) as r:
            assert r.status_code == 200 and "raw text built" not in r.read().decode()
        assert c.get(f"/api/data/rows?file={f}&start=0&count=5").status_code == 200
    monkeypatch.setattr(datafiles, "_raw_text", real)
    row = c.get("/api/data/row?file=data/t.parquet&index=1").json()
    assert row["ok"] is False and row["raw"] == '{"instruction": "q2", "output": ""}'


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with a validation split of 4 rows, trained in process."""
    import contextlib

    from qwen_sft.config import build_config
    from qwen_sft.train import train

    ws = make_workspace(tmp_path_factory.mktemp("heldout") / "ws", with_model=True)
    with contextlib.chdir(ws):
        train(build_config(tiny_config(run_name="held", max_steps=2, val_size=4, eval_steps=2)))
    return ws


@pytest.mark.slow
def test_the_validation_split_is_the_rows_training_held_out(trained, monkeypatch):
    from qwen_sft.data.dataset import split_indices
    from qwen_sft.data.formats import load_dataset
    from qwen_sft.errors import UserError
    from qwen_sft.ui.heldout import write_split

    ws = trained
    monkeypatch.chdir(ws)
    out = write_split(ws / "runs" / "held")
    rows = load_dataset(["data/train.jsonl"]).conversations
    _, held = split_indices(len(rows), 4, tiny_config()["seed"])
    assert [json.loads(line)["messages"] for line in out.read_text().splitlines()] == [rows[i].messages for i in held]

    status = client(ws).get("/api/ops/status?run=runs/held").json()
    assert status["split"] == {"val_size": 4, "val_rows": 4} and status["train_data"] == ["data/train.jsonl"]

    # The data changed since training: the split would be other rows; refused, nothing evaluated.
    with open(ws / "data" / "train.jsonl", "a") as f:
        f.write(json.dumps({"instruction": "new", "output": "row"}) + "\n")
    try:
        with pytest.raises(UserError, match="the data changed since training"):
            write_split(ws / "runs" / "held")
    finally:
        lines = (ws / "data" / "train.jsonl").read_text().splitlines(keepends=True)
        (ws / "data" / "train.jsonl").write_text("".join(lines[:-1]))


# The eval of a run's validation split as a job (the split written, `qwen-sft eval` run on it, the job's status and
# log): tests/ui/test_browser_firstuse.py::test_eval_on_the_validation_split_from_the_run_page starts it from the page.


def test_eval_of_the_validation_split_needs_one(ws):
    c = client(ws)
    run = finished(ws, "nosplit", val_size=0)
    (run / "lora_adapters").mkdir()
    (run / "lora_adapters" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "Qwen/Qwen3-0.6B"})
    )
    (run / "lora_adapters" / "adapter_model.safetensors").write_bytes(b"")
    assert c.get("/api/ops/status?run=runs/nosplit").json()["split"] is None
    r = c.post("/api/ops/eval", json={"run": "runs/nosplit", "data": "validation"})
    assert r.status_code == 409 and r.json()["error"].startswith("data: this run held no rows out")
