"""/api/data and /api/jobs of `qwen-sft ui`, in process: the row view is what `qwen-sft inspect --json` trains, the
check is `qwen-sft check` with every problem, uploads never leave the workspace or replace a file, jobs cancel."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest

from qwen_sft import cli
from qwen_sft.assets import qwen3_tokenizer_dir
from qwen_sft.data.formats import load_dataset
from qwen_sft.ui import data as data_area
from qwen_sft.ui.jobs import Jobs
from tests.ui.conftest import make_workspace
from tests.ui.test_api import client

ROWS = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "Two plus two."},
            {"role": "user", "content": "And 3+3, caf\u00e9?"},
            {"role": "assistant", "content": "6", "reasoning_content": "Three and three make six."},
        ]
    },
    {"instruction": "Name a colour.", "input": "One word.", "output": "Blue."},
    {
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "<think>\ngreet\n</think>\n\nHello!"},
        ]
    },
]


@pytest.fixture
def ws(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    (ws / "data" / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return ws


def inspect_json(ws, monkeypatch, capsys, overrides: list[str], tokenizer: str) -> list[dict]:
    monkeypatch.chdir(ws)
    capsys.readouterr()
    assert cli.main(["inspect", "sft/configs/tiny.yaml", "dataset=data/mixed.jsonl", *overrides, "--json", "--n", "10",
                     "--tokenizer", tokenizer]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("settings", [{}, {"enable_thinking": "true"}, {"enable_thinking": "true", "train_on": "last"},
                                      {"cutoff_len": "20"}])
@pytest.mark.slow
def test_row_tokens_are_marked_as_inspect_json_marks_them(ws, monkeypatch, capsys, settings):
    c = client(ws)
    params = {"file": "data/mixed.jsonl", "tokenizer": "bundled:hybrid", "cutoff_len": "128", **settings}
    expected = inspect_json(
        ws,
        monkeypatch,
        capsys,
        [f"{k}={v}" for k, v in params.items() if k in ("enable_thinking", "train_on", "cutoff_len")],
        str(qwen3_tokenizer_dir("hybrid")),
    )
    page = c.get("/api/data/rows", params=params).json()
    assert page["total"] == 3 and [r["where"] for r in page["rows"]] == [f"data/mixed.jsonl:{i}" for i in (1, 2, 3)]
    # inspect lists the rows training keeps: those with a trained token within cutoff_len
    kept = [r["index"] for r in page["rows"] if not r["dropped"]]
    assert len(kept) == (2 if settings.get("cutoff_len") == "20" else 3)
    if len(kept) == 2:
        assert page["rows"][0]["dropped"] == "no trained token within cutoff_len=20: dropped from training"
    # inspect lists every sequence training keeps; the row view shows a row's sequences together (the row of
    # history turns: its first reply after its own served prompt, data/encode.py)
    rows = [c.get("/api/data/row", params={**params, "index": i}).json() for i in kept]
    shown = [seq for row in rows for seq in [row["tokens"]] + row["more"] if any(t[2] for t in seq)]
    assert len(expected) == len(shown) >= len(kept)
    assert (len(shown) > len(kept)) == (settings.get("train_on") != "last" and "cutoff_len" not in settings)
    for seq, want in zip(shown, expected):
        assert [t[0] for t in seq] == want["input_ids"]
        assert [bool(t[2]) for t in seq] == [label != -100 for label in want["labels"]]
    for i, row in zip(kept, rows):
        assert page["rows"][i]["tokens"] == len(row["tokens"])
        assert row["trained"] == sum(t[2] for seq in [row["tokens"]] + row["more"] for t in seq)
        assert "".join(t[1] for t in row["tokens"]).startswith("<|im_start|>")  # the pieces are the text
        served = [t[0] for t in row["served"]]
        if not row["truncated"]:
            assert row["served_is_prefix"] and row["tokens"][len(served) - 1][0] == served[-1]
            assert row["tokens"][len(served)][2] == 1  # the last reply's first token is trained
    # Switching the mode re-renders: thinking on trains the think block of the last reply.
    on = c.get("/api/data/row", params={**params, "index": 0, "enable_thinking": "true", "cutoff_len": "128"}).json()
    assert "<think>" in [t[1] for t in on["tokens"] if t[2]] and on["template_kind"] == "hybrid"


@pytest.mark.slow
def test_a_mode_the_template_cannot_serve_is_the_clis_refusal(ws, monkeypatch, capsys):
    shutil.copytree(qwen3_tokenizer_dir("instruct-2507"), ws / "models" / "inst")
    monkeypatch.chdir(ws)
    capsys.readouterr()
    assert cli.main(["check", "data/mixed.jsonl", "--tokenizer", "models/inst", "model_name_or_path=models/inst",
                     "enable_thinking=true", "--report", str(ws.parent / "r.json")]) == 2
    refusal = capsys.readouterr().err.strip().removeprefix("error: ")
    assert refusal.startswith("enable_thinking: true, but models/inst is never-thinking")
    c = client(ws)
    r = c.get("/api/data/row", params={"file": "data/mixed.jsonl", "index": 0, "tokenizer": "models/inst",
                                       "enable_thinking": "true"})
    assert r.status_code == 422 and r.json()["error"] == refusal and r.json()["fields"]["enable_thinking"] == [refusal]
    r = c.post("/api/data/check", json={"files": ["data/mixed.jsonl"], "tokenizer": "models/inst",
                                        "values": {"enable_thinking": "true"}})
    assert r.status_code == 422 and r.json()["error"] == refusal
    ok = c.get("/api/data/row", params={"file": "data/mixed.jsonl", "index": 0, "tokenizer": "models/inst"}).json()
    assert ok["ok"] and ok["template_kind"] == "instruct" and ok["enable_thinking"] is False


def test_bad_rows_and_places(ws):
    (ws / "data" / "bad.jsonl").write_text('{"instruction": "q", "output": ""}\n\nnot json\n')
    c = client(ws)
    rows = c.get("/api/data/rows", params={"file": "data/bad.jsonl"}).json()["rows"]
    assert [(r["where"], r["ok"], r["error"]) for r in rows] == [
        ("data/bad.jsonl:1", False, "data/bad.jsonl:1: output: empty"),
        ("data/bad.jsonl:3", False, "data/bad.jsonl:3: (line): malformed JSON: Expecting value at column 1")]
    assert c.get("/api/data/row", params={"file": "data/bad.jsonl", "where": "3"}).json()["index"] == 1
    assert c.get("/api/data/row", params={"file": "data/bad.jsonl", "where": "2"}).status_code == 404  # blank line
    assert c.get("/api/data/row", params={"file": "data/bad.jsonl", "index": 5}).status_code == 404
    (ws / "data" / "empty.jsonl").write_text("\n")
    r = c.get("/api/data/rows", params={"file": "data/empty.jsonl"})
    assert r.status_code == 422 and r.json()["error"].endswith("data/empty.jsonl:1: (file): empty file")
    r = c.get("/api/data/rows", params={"file": "data/mixed.jsonl", "cutoff_len": "0", "train_on": "first"})
    assert r.status_code == 422 and set(r.json()["fields"]) == {"cutoff_len", "train_on"}


@pytest.mark.parametrize("name", ["../x.jsonl", "/etc/passwd", "data/../../x.jsonl"])
def test_paths_outside_the_workspace_are_refused(ws, tmp_path, name):
    c = client(ws)
    for path in ("/api/data/rows", "/api/data/row", "/api/data/search"):
        r = c.get(path, params={"file": name, "q": "x"})
        assert r.status_code in (403, 404) and ("outside the workspace" in r.json()["error"] or r.status_code == 404)
    r = c.post("/api/data/check", json={"files": [name], "values": {}})
    assert r.status_code in (403, 404)
    (tmp_path / "secret.jsonl").write_text(json.dumps(ROWS[1]) + "\n")
    (ws / "data" / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    assert c.get("/api/data/rows", params={"file": "data/link.jsonl"}).status_code == 403
    assert "data/link.jsonl" not in [f["path"] for f in c.get("/api/data/files").json()["files"]]


def test_files_list_data_outside_runs_and_models(ws):
    (ws / "runs" / "r").mkdir(parents=True)
    (ws / "runs" / "r" / "live.jsonl").write_text("{}\n")
    (ws / "models" / "m").mkdir(parents=True)
    (ws / "models" / "m" / "config.json").write_text("{}")
    (ws / "models" / "m" / "tokenizer.json").write_text("{}")
    (ws / ".hidden").mkdir()
    (ws / ".hidden" / "x.jsonl").write_text("{}\n")
    files = client(ws).get("/api/data/files").json()
    assert [f["path"] for f in files["files"]] == ["data/mixed.jsonl", "data/train.jsonl"]
    assert [t["id"] for t in files["tokenizers"]][:3] == [
        "bundled:hybrid",
        "bundled:instruct-2507",
        "bundled:thinking-2507",
    ]
    # the selects of the data page: the config fields' choices, as key=value writes them
    assert files["choices"] == {"enable_thinking": ["auto", "true", "false"], "train_on": ["all", "last"]}


def upload(c, body: bytes, **params):
    return c.post("/api/data/upload", params=params, content=body, headers={"content-type": "application/octet-stream"})


def test_upload_into_the_workspace_never_over_a_file(ws, tmp_path, monkeypatch):
    c = client(ws)
    row = json.dumps(ROWS[1]).encode() + b"\n"
    r = upload(c, row, name="new.jsonl", dir="data/uploads")
    assert r.status_code == 200 and r.json() == {"path": "data/uploads/new.jsonl", "bytes": len(row)}
    assert (ws / "data/uploads/new.jsonl").read_bytes() == row
    r = upload(c, b"other", name="new.jsonl", dir="data/uploads")
    assert r.status_code == 409 and "nothing was overwritten" in r.json()["error"]
    assert (ws / "data/uploads/new.jsonl").read_bytes() == row
    for name in ("../x.jsonl", "a/b.jsonl", ".hidden.jsonl", "x.exe", "", "x.jsonl "):
        assert upload(c, row, name=name).status_code == 400, name
    assert upload(c, row, name="x.jsonl", dir="../elsewhere").status_code == 403
    (tmp_path / "out").mkdir()
    (ws / "data" / "out").symlink_to(tmp_path / "out")
    assert upload(c, row, name="x.jsonl", dir="data/out").status_code == 403 and not list((tmp_path / "out").iterdir())
    assert upload(c, b"", name="empty.jsonl").status_code == 400 and not (ws / "data/empty.jsonl").exists()
    # A name too long for the file system (90 CJK characters: 270 bytes), a folder under a file: one line, a 400.
    r = upload(c, row, name="\u4e2d" * 90 + ".jsonl")
    assert r.status_code == 400 and "at most 200 bytes" in r.json()["error"]
    r = upload(c, row, name="x.jsonl", dir="data/train.jsonl/x")
    assert r.status_code == 400 and r.json()["error"].startswith("dir: cannot make data/train.jsonl/x: ")
    monkeypatch.setattr(data_area, "MAX_UPLOAD_BYTES", 10)
    assert upload(c, row, name="big.jsonl").status_code == 413
    # no temp left
    assert sorted(p.name for p in (ws / "data").iterdir()) == ["mixed.jsonl", "out", "train.jsonl", "uploads"]
    # A file body is accepted by the upload route only.
    r = c.post("/api/data/check", content=b"{}", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415
    r = c.post("/api/data/upload?name=y.jsonl", content=row, headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_search_streams_row_numbers(ws):
    c = client(ws)
    with c.stream("GET", "/api/data/search", params={"file": "data/mixed.jsonl", "q": "CAF\u00c9"}) as r:
        text = r.read().decode()
    events = [(e.split("\n")[0][7:], json.loads(e.split("data: ", 1)[1])) for e in text.strip().split("\n\n")]
    assert events == [
        ("found", [[0, "data/mixed.jsonl:1", "And 3+3, caf\u00e9?"]]),
        ("progress", {"scanned": 3, "total": 3}),
        ("done", {"matches": 1, "total": 3}),
    ]
    assert c.get("/api/data/search", params={"file": "data/mixed.jsonl", "q": " "}).status_code == 400


def wait_job(c, job: dict, timeout: float = 240) -> dict:
    end = time.time() + timeout
    while job["status"] in ("running", "cancelling"):
        assert time.time() < end, job
        time.sleep(0.3)
        job = c.get("/api/jobs/get", params={"id": job["id"]}).json()
    return job


@pytest.mark.slow
def test_check_lists_every_problem_with_its_line_and_the_report(ws, monkeypatch):
    good = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(30)]
    bad = [json.dumps({"instruction": f"b{i}", "output": ""}) for i in range(25)]
    lines = [x for pair in zip(good, bad + [""] * 5) for x in pair if x] + ["{broken"]
    (ws / "data" / "bad.jsonl").write_text("\n".join(lines) + "\n")
    c = client(ws)
    r = c.post("/api/data/check", json={"files": ["data/bad.jsonl", "data/mixed.jsonl"], "tokenizer": "bundled:hybrid",
                                        "values": {"cutoff_len": "40", "enable_thinking": "true"}})
    assert r.status_code == 200, r.text
    job = wait_job(c, r.json())
    assert job["status"] == "finished", job
    assert job["progress"]["done"] == job["progress"]["total"] == 4
    res = job["result"]
    monkeypatch.chdir(ws)
    expected = load_dataset(["data/bad.jsonl", "data/mixed.jsonl"], skip_invalid=True).invalid
    assert res["problems"] == expected and len(expected) == 26  # all of them, not the report's first 20
    assert res["problems"][0] == "data/bad.jsonl:2: output: empty" and res["problems"][-1].startswith(
        "data/bad.jsonl:56:"
    )
    report = res["report"]
    assert report["rows_kept"] == 33 and report["invalid_rows"] == 26 and report["enable_thinking"] is True
    # the encoded lengths of what training sees: a row of two sequences (its first reply after its own served
    # prompt, data/encode.py) counts twice
    assert sum(res["histogram"]["counts"]) == report["sequences"] == 34 and res["histogram"]["cutoff_len"] == 40
    assert res["failed"][0].startswith("26 invalid row(s) stop training")
    assert any("max_dropped_share" in f for f in res["failed"])
    assert "rows read 59" in res["report_text"]
    assert c.get("/api/jobs/list", params={"kind": "check"}).json()["jobs"][0]["id"] == job["id"]
    r = c.post("/api/data/check", json={"files": ["data/mixed.jsonl"], "values": {"lora_rank": "4"}})
    assert r.status_code == 400 and "not a data setting" in r.json()["error"]
    r = c.post("/api/data/check", json={"files": ["data/mixed.jsonl"], "values": {"max_dropped_share": "2"}})
    assert r.status_code == 422 and r.json()["fields"] == {"max_dropped_share": ["max_dropped_share: must be in [0, "
                                                                                 "1], got 2.0"]}


def group_alive(pgid: int) -> bool:
    """A process of group pgid runs (not a zombie, which a container's init may leave unreaped)."""
    for d in os.listdir("/proc"):
        try:
            fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_a_cancelled_job_ends_with_what_it_started(tmp_path):
    jobs = Jobs(tmp_path)
    script = ("import subprocess, sys, time; print('progress: 1/3 waiting', flush=True); "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)")
    job = jobs.start("check", "sleeper", [sys.executable, "-c", script], tmp_path / "job.log")
    end = time.time() + 30
    while job.summary()["progress"]["done"] is None:
        assert time.time() < end
        time.sleep(0.1)
    assert job.summary()["progress"] == {"done": 1, "total": 3, "text": "waiting"}
    pgid = job.proc.pid
    jobs.cancel(job)
    job.proc.wait(timeout=30)
    assert job.status == "cancelled"
    end = time.time() + 10
    while group_alive(pgid):  # the grandchild goes with it: nothing left running in its process group
        assert time.time() < end, "a process of the cancelled job's group still runs"
        time.sleep(0.1)
    with pytest.raises(Exception) as e:
        jobs.get("nope")
    assert "no such job" in str(e.value)
    failing = jobs.start("merge", "fails", [sys.executable, "-c", "import sys; print('error: it broke'); sys.exit(2)"],
                         tmp_path / "m.log", owner="runs/a")
    failing.proc.wait(timeout=30)
    summary = failing.summary()
    assert summary["status"] == "failed" and summary["error"] == "it broke" and summary["returncode"] == 2


def test_length_histogram_against_cutoff_len():
    from qwen_sft.ui.datacheck import histogram

    h = histogram([1, 24, 25, 40, 40], 40)  # rows cut at cutoff_len have exactly cutoff_len tokens
    assert (h["top"], h["width"], len(h["counts"]), h["at_cutoff"]) == (40, 2, 20, 2)
    assert [i for i, c in enumerate(h["counts"]) for _ in range(c)] == [0, 11, 12, 19, 19]
    far = histogram([10, 30], 4096)  # all far below cutoff_len: the bars span the rows
    assert (far["top"], far["width"], sum(far["counts"]), far["at_cutoff"], far["max"]) == (30, 2, 2, 0, 30)
