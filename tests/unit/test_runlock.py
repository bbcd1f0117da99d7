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


@pytest.mark.slow
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


# ---- issue #23 item 1: the lock file goes through fileio.open_run_file (no link, only a regular file, bounded)

def test_a_lock_name_that_links_to_a_user_file_never_truncates_it(tmp_path):
    victim = tmp_path / "thesis.tex"
    victim.write_text("years of work")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(victim)
    with pytest.raises(UserError) as e:
        with hold(run):
            pass
    assert str(e.value) == (f"{run / LOCK_NAME}: is a symbolic link, not a regular file (qwen-sft neither follows a "
                            "link nor reads anything else here); it is the run directory's lock file: remove it and "
                            "start again")
    assert victim.read_text() == "years of work" and run_owner(run) is None


@pytest.mark.parametrize("kind", ["directory", "dangling link"])
def test_a_directory_or_a_dangling_link_at_the_lock_name_is_one_line(tmp_path, kind):
    elsewhere = tmp_path / "elsewhere"
    if kind == "directory":
        (tmp_path / LOCK_NAME).mkdir()
    else:
        (tmp_path / LOCK_NAME).symlink_to(elsewhere)  # following it would create a file there
    what = "a directory" if kind == "directory" else "a symbolic link"
    with pytest.raises(UserError, match=rf"^{tmp_path / LOCK_NAME}: is {what}, not a regular file .*: remove it"):
        with hold(tmp_path):
            pass
    assert run_owner(tmp_path) is None and not elsewhere.exists()


HOSTILE = """
import json, os, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))  # /dev/zero read whole would take every byte it can
from qwen_sft.errors import UserError
from qwen_sft.runlock import hold, run_owner
run = Path(sys.argv[1])
out = {"owner": run_owner(run)}
try:
    with hold(run):
        out["held"] = True
except UserError as e:
    out["refused"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_fifo_or_a_device_at_the_lock_name_neither_hangs_nor_fills_memory(tmp_path, kind):
    """In a process of its own with a 10 s limit and 1 GiB of address space: a FIFO opened for reading blocks until
    a writer comes (SIGTERM does not end that wait), /dev/zero read whole ends in MemoryError."""
    lock = tmp_path / LOCK_NAME
    os.mkfifo(lock) if kind == "fifo" else lock.symlink_to(kind)
    done = subprocess.run([sys.executable, "-c", HOSTILE, str(tmp_path)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    what = "a FIFO (named pipe)" if kind == "fifo" else "a symbolic link"
    assert json.loads(done.stdout) == {"owner": None, "refused": f"{lock}: is {what}, not a regular file (qwen-sft "
                                       "neither follows a link nor reads anything else here); it is the run "
                                       "directory's lock file: remove it and start again"}


# ---- issue #23 item 16: any field of any type in the lock file names less of the holder, never raises

@pytest.mark.parametrize("text", ['{"pid": 4242, "host": "node-7", "started": 1e300}',
                                  '{"pid": 4242, "host": "node-7", "started": NaN}',
                                  '{"pid": 4242, "host": "node-7", "started": -1e300, "argv": "x"}',
                                  '{"pid": 4242, "host": "node-7", "started": "yesterday", "argv": [1, null]}'])
def test_an_odd_start_time_in_another_hosts_lock(tmp_path, text):
    (tmp_path / LOCK_NAME).write_text(text)
    owner = run_owner(tmp_path)
    assert owner == {"pid": 4242, "host": "node-7", "same_host": False}
    with pytest.raises(UserError, match=r"locked by a run on another host \(pid 4242 on host node-7\), which"):
        with hold(tmp_path):
            pass


@pytest.mark.parametrize("text", ['{"pid": 100000000000000000000000000000, "started": 1e300}', '{"pid": true}',
                                  '{"pid": "4242", "host": ["node-7"], "started": {}}', '[1, 2]', '"x"',
                                  '{"pid": -5, "host": ""}', "[" * 100000, '{"pid": 1e400}'])
def test_odd_types_in_a_stale_lock_of_this_host_are_taken_over(tmp_path, text, capsys):
    (tmp_path / LOCK_NAME).write_text(text)
    assert run_owner(tmp_path) is None
    with hold(tmp_path) as info:
        assert run_owner(tmp_path)["pid"] == info["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("pid ? on host ?" in err or err == "")


def test_pid_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    assert runlock.pid_alive(os.getpid()) and runlock.pid_alive(1)  # 1: init, another user's process is alive too
    assert not runlock.pid_alive(child.pid)
    assert not any(runlock.pid_alive(p) for p in (0, -1, None, "123", True))
