"""The run's files are written whole and never through a symbolic link: a run directory from elsewhere (a shared
folder, a clone, the UI's workspace) must not make training, eval or the UI write into another file."""

import json

import pytest

from qwen_sft.config import build_config, save_config
from qwen_sft.data.report import save_report
from qwen_sft.fileio import replacing, write_text


def test_a_link_at_the_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.json", "config.yaml", "data_report.json"):
        (run / name).symlink_to(victim)
    write_text(run / "metrics.json", "{}")
    save_config(build_config({"run_name": "x"}), run / "config.yaml")
    save_report({"rows_read": 1}, run / "data_report.json")
    assert victim.read_text() == "keep me"
    assert not any(p.is_symlink() for p in run.iterdir())
    assert (run / "metrics.json").read_text() == "{}" and json.loads((run / "data_report.json").read_text()) == {
        "rows_read": 1
    }
    assert "run_name: x" in (run / "config.yaml").read_text()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "data_report.json", "metrics.json"]  # no temp


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.setattr("os.getpid", lambda: 7)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / ".out.json.tmp-7").symlink_to(victim)
    write_text(tmp_path / "out.json", "new")
    assert victim.read_text() == "keep me" and (tmp_path / "out.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "victim"]


def test_an_error_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(path) as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with replacing(tmp_path / "curve.png", "wb") as f:
        f.write(b"\x89PNG")
    assert (tmp_path / "curve.png").read_bytes() == b"\x89PNG"


# ---- issue #23 item 1: one helper opens every run file: no link, a regular file only, read up to a bound

import os  # noqa: E402
import signal  # noqa: E402
from contextlib import contextmanager  # noqa: E402

from qwen_sft import live  # noqa: E402
from qwen_sft.checkpoint import read_run_id  # noqa: E402
from qwen_sft.fileio import READ_LIMIT, read_text  # noqa: E402


@contextmanager
def within(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading waits for a writer for good)."""
    def expired(*_):
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def plant(path, kind, tmp_path):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "link to a file":
        (tmp_path / "secret").write_text("secret")
        path.symlink_to(tmp_path / "secret")
    else:
        path.symlink_to(kind)  # /dev/zero


KINDS = {"fifo": "a FIFO (named pipe)", "directory": "a directory", "dangling link": "a symbolic link",
         "link to a file": "a symbolic link", "/dev/zero": "a symbolic link"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_run_files_are_regular_files_only(tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.json", "run_id", "live.jsonl", ".qwen-sft.lock"):
        plant(run / name, kind, tmp_path)
    with within(10):
        with pytest.raises(OSError) as e:
            read_text(run / "metrics.json")
        assert e.value.strerror == f"is {KINDS[kind]}, not a regular file (qwen-sft neither follows a link nor reads " \
                                   "anything else here)" and e.value.filename == str(run / "metrics.json")
        assert read_run_id(run) is None
        assert live.read_records(run / "live.jsonl") == ([], 0)  # the UI reads it on its event loop
        assert live.trainer_alive({"status": "running"}, run) is False  # the lock: no run can hold such a file


def test_a_run_file_is_read_up_to_a_bound(tmp_path, monkeypatch):
    big = tmp_path / "loss_history.json"
    with open(big, "wb") as f:
        f.truncate(READ_LIMIT + 1)  # sparse: costs no disk
    with pytest.raises(OSError, match="is 256.0 MiB, more than the 256 MiB qwen-sft reads of such a file"):
        read_text(big)
    assert read_text(big, limit=READ_LIMIT + 1) == "\0" * (READ_LIMIT + 1)
    # live.jsonl is read on from an offset, at most READ_LIMIT bytes at a time: whole lines, the rest next time.
    line = b'{"step": 1}\n'
    (tmp_path / "live.jsonl").write_bytes(line * 3)
    monkeypatch.setattr(live, "READ_LIMIT", 2 * len(line) + 3)
    records, offset = live.read_records(tmp_path / "live.jsonl")
    assert records == [{"step": 1}] * 2 and offset == 2 * len(line)
    assert live.read_records(tmp_path / "live.jsonl", offset) == ([{"step": 1}], 3 * len(line))
