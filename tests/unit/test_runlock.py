"""Issue #18 case 2: one owner per run directory. The lock is the kernel's (flock), so a dead holder is never
mistaken for a live one, and its pid / host name the holder."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from qwen_sft.errors import UserError
from qwen_sft import runlock
from qwen_sft.runlock import LOCK_NAME, hold, run_owner

HOLDER = "import sys, time; from pathlib import Path; from qwen_sft.runlock import hold\n" \
         "with hold(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)\n"


def test_hold_names_the_owner_and_a_clean_end_leaves_nothing_stale(tmp_path):
    assert run_owner(tmp_path) is None
    with hold(tmp_path) as info:
        owner = run_owner(tmp_path)
        assert owner["pid"] == os.getpid() == info["pid"] and owner["host"] == socket.gethostname()
        assert owner["same_host"] is True
        with pytest.raises(UserError, match=rf"in use by another training run \(pid {os.getpid()} on host "):
            with hold(tmp_path):
                pass
    assert run_owner(tmp_path) is None and (tmp_path / LOCK_NAME).read_text() == ""


def test_a_live_process_holds_it_and_a_killed_one_does_not(tmp_path, capsys):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        assert run_owner(tmp_path)["pid"] == proc.pid
        with pytest.raises(UserError) as e:
            with hold(tmp_path):
                pass
        assert f"pid {proc.pid} on host {socket.gethostname()}" in str(e.value)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: the lock file still names it
        proc.wait()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == proc.pid
        assert run_owner(tmp_path) is None  # the kernel released the flock: not live, whatever the file says
        with hold(tmp_path):
            assert f"taking over the lock left by an earlier run that ended without releasing it (pid {proc.pid}" \
                in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_of_another_host_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "node-7", "started": time.time()}))
    assert run_owner(tmp_path)["host"] == "node-7" and run_owner(tmp_path)["same_host"] is False
    with pytest.raises(UserError) as e:
        with hold(tmp_path):
            pass
    assert "locked by a run on another host (pid 4242 on host node-7" in str(e.value)
    assert f"delete {tmp_path / LOCK_NAME}" in str(e.value)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "node-7"  # left as found


def test_a_forked_child_does_not_keep_the_directory_locked(tmp_path):
    """DataLoader workers are forked from the trainer: a worker outliving it must not hold the lock."""
    ready_r, ready_w = os.pipe()
    with hold(tmp_path):
        pid = os.fork()
        if pid == 0:  # the at-fork hooks have run by now
            os.write(ready_w, b"x")
            time.sleep(3)
            os._exit(0)
        assert os.read(ready_r, 1) == b"x"
        assert run_owner(tmp_path)["pid"] == os.getpid()
    try:
        assert run_owner(tmp_path) is None  # released although the child still runs
        with hold(tmp_path):
            pass
    finally:
        os.waitpid(pid, 0)


def test_pid_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    assert runlock.pid_alive(os.getpid()) and runlock.pid_alive(1)  # 1: init, another user's process is alive too
    assert not runlock.pid_alive(child.pid)
    assert not any(runlock.pid_alive(p) for p in (0, -1, None, "123", True))
