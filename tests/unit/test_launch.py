"""The supervisor of a multi-process run (launch.supervise): a stop passed to the workers gives exit code 3,
a second interrupt 130, a hang-up or the supervisor's death stops the run too. Stand-ins replace torchrun and
training: the protocol is what is tested here (tests/e2e/test_multiprocess.py runs it under torchrun)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# argv: seconds to wait before registering. Gives up after 30 s, so a failed test leaves no process behind.
WORKER = textwrap.dedent("""
    import sys, time
    from qwen_sft import launch
    from qwen_sft.launch import GracefulStop
    with GracefulStop() as stop:
        print("starting", flush=True)
        time.sleep(float(sys.argv[1]))
        launch.register_worker()
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.02)
        if not stop.requested:
            sys.exit(1)
        time.sleep(1.5)  # "saving a checkpoint": a second interrupt lands here
        print("saved", flush=True)
        sys.exit(0 if launch.report_stop() else 3)
""")
# torchrun's part: the worker in a session of its own; a signal to the launcher itself is passed on to the
# worker as SIGTERM, and the launcher then exits 1 (as torchrun does, with a traceback), saying so.
LAUNCHER = textwrap.dedent("""
    import signal, subprocess, sys
    worker = subprocess.Popen([sys.executable, "-c", *sys.argv[1:]], start_new_session=True)
    signalled = []
    def on_signal(sig, _):
        print("launcher signalled", flush=True)
        signalled.append(sig)
        worker.send_signal(signal.SIGTERM)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    code = worker.wait()
    sys.exit(1 if signalled or code else 0)
""")
SUPERVISOR = (
    "import sys; from qwen_sft.launch import supervise; sys.exit(supervise([sys.executable, '-c', *sys.argv[1:]]))"
)


def start(register_after: float = 0.0, tmpdir=None) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmpdir)} if tmpdir else None
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, LAUNCHER, WORKER, str(register_after)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline() == "starting\n"
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])  # the field after the state
    except (OSError, IndexError, ValueError):
        return None


def signalled(signals: list[int], gap: float = 0.0) -> tuple[int, str]:
    proc = start()
    assert proc.stdout.readline() == "ready\n"
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(gap)
    return finish(proc)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_reaches_the_worker_not_the_launcher_and_the_supervisor_exits_3(sig):
    # SIGHUP (the terminal closed) was: the supervisor died of it and left the run training, orphaned.
    assert signalled([sig]) == (3, "saved\n")


def test_a_second_interrupt_exits_at_once_with_130():
    assert signalled([signal.SIGINT, signal.SIGINT], gap=0.3) == (130, "")


@pytest.mark.slow
def test_a_signal_during_start_up_waits_for_the_worker():
    proc = start(register_after=1.0)
    proc.send_signal(signal.SIGINT)  # before the worker has registered: torchrun must not get it
    assert finish(proc) == (3, "ready\nsaved\n")


@pytest.mark.slow
def test_two_interrupts_while_no_worker_has_registered_end_the_launcher_once():
    # A start-up that hangs (say, a rendezvous) must stay interruptible: the second Ctrl-C goes to torchrun, once
    # (here the worker gets on anyway, and then both interrupts: it exits at once).
    proc = start(register_after=3.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    assert finish(proc) == (130, "launcher signalled\nready\n")


@pytest.mark.slow
def test_the_same_stop_by_two_paths_is_one_stop():
    """SLURM's scancel signals every process of the job: the worker gets it directly, from the supervisor and from
    torchrun, within moments; that is not a second interrupt. torchrun then exits 1; the run still stopped (3)."""
    proc = start()
    assert proc.stdout.readline() == "ready\n"
    launcher = next(int(d) for d in os.listdir("/proc") if d.isdigit() and parent_of(int(d)) == proc.pid)
    for pid in (proc.pid, launcher):
        os.kill(pid, signal.SIGTERM)
    assert finish(proc) == (3, "launcher signalled\nsaved\n")


@pytest.mark.slow
def test_when_the_supervisor_dies_the_run_stops_with_a_checkpoint(tmp_path):
    proc = start(tmpdir=tmp_path)
    assert proc.stdout.readline() == "ready\n"
    proc.kill()  # kill -9: torchrun gets SIGTERM (parent-death signal) and passes it on
    out, _ = proc.communicate(timeout=60)  # the pipe stays open until the launcher and worker have exited
    assert out == "launcher signalled\nsaved\n"
    # what kill -9 leaves: the supervisor's registration folder (in TMPDIR, here the test's own)
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("qwen-sft-launch-*/*")) == ["pid", "stopped"]


@pytest.mark.slow
def test_without_a_supervisor_a_stopped_worker_keeps_exit_code_3():
    proc = subprocess.Popen([sys.executable, "-c", WORKER, "0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "starting\n" and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (3, "saved\n")
