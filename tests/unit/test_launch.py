"""The supervisor of a multi-process run (launch.supervise): a stop passed to the workers gives exit code 3,
a second interrupt 130. Stand-ins replace torchrun and training: the protocol is what is tested here
(tests/e2e/test_multiprocess.py runs it under torchrun)."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

WORKER = textwrap.dedent("""
    import sys, time
    from qwen_sft import launch
    from qwen_sft.train import GracefulStop
    with GracefulStop() as stop:
        launch.register_worker()
        print("ready", flush=True)
        while not stop.requested:
            time.sleep(0.02)
        time.sleep(1.0)  # "saving a checkpoint": a second interrupt lands here
        print("saved", flush=True)
        sys.exit(0 if launch.report_stop() else 3)
""")
# torchrun's part: the worker in a session of its own, exit 1 when it fails; signals to the launcher itself
# are ignored here, so a supervisor that signalled the launcher instead of the worker would hang the test.
LAUNCHER = textwrap.dedent("""
    import signal, subprocess, sys
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    worker = subprocess.Popen([sys.executable, "-c", sys.argv[1]], start_new_session=True)
    sys.exit(0 if worker.wait() == 0 else 1)
""")
SUPERVISOR = "import sys; from qwen_sft.launch import supervise; sys.exit(supervise([sys.executable, '-c', *sys.argv[1:]]))"


def run(signals: list[int]) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, LAUNCHER, WORKER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.3)  # two signals sent at once arrive as one (pending signals do not queue)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_one_signal_reaches_the_worker_which_saves_and_the_supervisor_exits_3(sig):
    code, out = run([sig])
    assert (code, out) == (3, "saved\n")


def test_a_hang_up_stops_the_workers_as_sigterm_does():
    # Was: the supervisor died of SIGHUP (the terminal closed) and left torchrun and the workers training, orphaned.
    code, out = run([signal.SIGHUP])
    assert (code, out) == (3, "saved\n")


def test_a_second_interrupt_exits_at_once_with_130():  # the launcher itself exits 1
    code, out = run([signal.SIGINT, signal.SIGINT])
    assert (code, out) == (130, "")


def test_without_a_supervisor_a_stopped_worker_keeps_exit_code_3():
    proc = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (3, "saved\n")
