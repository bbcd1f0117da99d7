"""The live run record's reader, writer and liveness check (live.py); the trainer's use of it:
tests/e2e/test_live.py."""

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

from qwen_sft import live
from qwen_sft.config import TrainConfig
from qwen_sft.errors import ConfigError, DataError, StopRequested


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_read_records_skips_torn_lines_and_waits_for_the_last_newline(tmp_path):
    path = tmp_path / live.FILE
    path.write_bytes(b'{"step": 1}\n{"ste\n{"step": 2}\n{"step": 3')
    recs, offset = live.read_records(path)
    assert recs == [{"step": 1}, {"step": 2}]
    assert offset == len(b'{"step": 1}\n{"ste\n{"step": 2}\n')  # the unfinished line is read again later
    with open(path, "ab") as f:
        f.write(b"}\n")
    assert live.read_records(path, offset) == ([{"step": 3}], path.stat().st_size)
    assert live.read_records(tmp_path / "missing.jsonl", 5) == ([], 5)


def test_trainer_alive_names_one_process_on_this_host():
    me = {"pid": os.getpid(), "pid_start": live.process_start_time(os.getpid()), "host": socket.gethostname()}
    assert live.trainer_alive(me) is True
    assert live.trainer_alive({**me, "pid_start": me["pid_start"] + 1}) is False  # the pid now names another process
    assert live.trainer_alive({**me, "host": socket.gethostname() + "-elsewhere"}) is None  # cannot tell
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = live.process_start_time(child.pid)
    child.wait()
    assert live.trainer_alive({"pid": child.pid, "pid_start": start, "host": socket.gethostname()}) is False
    assert live.trainer_alive({}) is False


def test_without_proc_the_pid_alone_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(live, "PROC", tmp_path / "no-proc")  # as on macOS
    assert live.process_start_time(os.getpid()) is None
    assert live.trainer_alive({"pid": os.getpid(), "pid_start": None, "host": socket.gethostname()}) is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert live.trainer_alive({"pid": child.pid, "host": socket.gethostname()}) is False


def test_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = live.process_start_time(child.pid)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    try:
        assert start is not None and live.process_start_time(child.pid) is None
    finally:
        child.wait()


def test_nothing_is_written_before_start_nor_by_other_ranks(tmp_path):
    with live.LiveRecord() as rec:
        rec.start(tmp_path, TrainConfig(), is_main=False)
        rec.update(SimpleNamespace(step=1, history=[]), 4, 1e-4, 10, 1.0, 0.5)
        rec.finish({"train_steps": 4})
    try:
        with live.LiveRecord() as rec:
            raise DataError(["a.jsonl:3: output: empty"])
    except DataError:
        pass
    assert not (tmp_path / live.FILE).exists()


def test_updates_at_logged_steps_first_step_last_step_and_heartbeats(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    rec = live.LiveRecord()
    rec.start(tmp_path, TrainConfig(run_name="r"), is_main=True)
    history = [{"step": 1, "loss": 9.0, "lr": 1e-4}]  # restored from a checkpoint: not this session's
    for step in range(4, 11):  # a session resumed at step 3, logging every 3rd step, eval at 9
        if step % 3 == 0:
            history.append({"step": step, "loss": float(step), "lr": 1e-4})
        if step == 9:
            history.append({"step": step, "eval_loss": 0.5})
        clock[0] += 4.0 if step != 8 else 20.0  # step 8 comes after a long pause: a heartbeat
        rec.update(SimpleNamespace(step=step, history=history), 10, 1e-4, 100 * (step - 3), float(step - 3), 1.25)
    out = lines(tmp_path / live.FILE)
    assert out[0]["status"] == "running" and out[0]["phase"] == "setup" and out[0]["pid"] == os.getpid()
    assert out[0]["config"]["run_name"] == "r" and out[0]["host"] == socket.gethostname()
    steps = [(r["step"], r.get("loss"), r.get("eval_loss")) for r in out[1:]]
    assert steps == [(4, None, None), (6, 6.0, None), (8, None, None), (9, 9.0, 0.5), (10, None, None)]
    last = out[-1]
    assert last["total_steps"] == 10 and last["eta_s"] == 0 and last["memory_gb"] == 1.25
    assert last["tokens_per_second"] == 100.0  # tokens since the previous line / loop seconds since it
    assert out[2]["eta_s"] == round(3 / 3 * 4, 1)  # 3 s for 3 steps of this session, 4 to go


def test_end_states(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoint-2" / "COMPLETE").write_text("{}")
    (run / "checkpoint-3").mkdir()  # no marker: incomplete, never resumed from
    for exc in (StopRequested("stopped at step 3; checkpoint saved"), ConfigError(["lora_rank: must be > 0, got 0"]),
                RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore text"), None):
        try:
            with live.LiveRecord() as rec:
                rec.start(run, TrainConfig(), is_main=True)
                if exc is not None:
                    raise exc
                rec.finish({"train_steps": 5, "train_loss": 1.5})
        except Exception as e:
            assert e is exc
    ends = [r for r in lines(run / live.FILE) if r["status"] != "running"]
    assert ends[0] == {"time": ends[0]["time"], "status": "stopped", "message": "stopped at step 3; checkpoint saved",
                       "checkpoint": str(run / "checkpoint-2")}
    assert ends[1]["status"] == "failed" and ends[1]["error"] == "invalid config: - lora_rank: must be > 0, got 0"
    assert ends[2]["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    assert ends[2]["detail"].endswith("more text")
    assert ends[3]["status"] == "finished" and ends[3]["step"] == 5 and ends[3]["metrics"]["train_loss"] == 1.5


def test_write_error_turns_the_record_off(tmp_path, caplog):
    rec = live.LiveRecord()
    rec.start(tmp_path / "gone", TrainConfig(), is_main=True)  # the directory does not exist: the write fails
    assert rec.path is None and "cannot write" in caplog.text
    rec.update(SimpleNamespace(step=1, history=[]), 4, 1e-4, 10, 1.0, 0.5)  # and nothing raises


def test_a_run_directory_lock_decides_liveness(tmp_path):
    from qwen_sft import runlock

    me = {"pid": os.getpid(), "pid_start": live.process_start_time(os.getpid()), "host": socket.gethostname()}
    with runlock.hold(tmp_path):
        assert live.trainer_alive({"pid": 2**22 + 7, "host": socket.gethostname()}, tmp_path) is True
    assert live.trainer_alive(me, tmp_path) is False  # released: that run ended (this pid lives on, doing other things)
    (tmp_path / runlock.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-node", "started": 0}))
    assert live.trainer_alive(me, tmp_path) is None  # held on another host, as far as anyone here can tell


def test_a_resumed_session_records_the_eval_its_stop_interrupted(tmp_path):
    rec = live.LiveRecord()
    rec.start(tmp_path, TrainConfig(), is_main=True)
    # Restored at step 4 (loss logged there by the first session); the resumed session reran step 4's eval first.
    history = [
        {"step": 2, "loss": 3.0, "lr": 1e-4},
        {"step": 4, "loss": 2.0, "lr": 1e-4},
        {"step": 4, "eval_loss": 2.5},
    ]
    history.append({"step": 5, "loss": 1.5, "lr": 1e-4})
    rec.update(SimpleNamespace(step=5, history=history), 6, 1e-4, 10, 1.0, 0.5)
    out = [(r["step"], r.get("loss"), r.get("eval_loss")) for r in lines(tmp_path / live.FILE)[1:]]
    assert out == [(4, 2.0, 2.5), (5, 1.5, None)]
