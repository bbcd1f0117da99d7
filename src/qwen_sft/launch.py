"""Multi-process launch through torchrun (one process per GPU), never a home-made launcher.

`qwen-sft train --nproc N` (or several visible GPUs) runs torchrun as a child and stays as its supervisor,
so that a graceful stop ends the way it does in one process: a checkpoint, a one-line message, exit code 3.
Without that, torchrun turns a stop into a traceback of its own and exit code 1 (it reports any signal it
gets, and any worker's non-zero exit, as a failure). The protocol, through a temporary directory named in
the workers' environment:
  - each worker writes `pid-<pid>` when it starts catching signals (train.train);
  - the supervisor passes SIGINT / SIGTERM / SIGHUP straight to those workers, not to torchrun (torchrun runs
    in a session of its own, so a terminal's Ctrl-C reaches only the supervisor); a signal that comes before a
    worker registers is passed on when it does; the workers agree on a step, save, and each writes
    `stopped-<pid>` and exits 0, so torchrun ends quietly;
  - the supervisor then exits with 3. A second interrupt reaches the workers the same way: they exit at once
    (exit code 130). If the supervisor dies, torchrun gets SIGTERM (the run stops with a checkpoint).
Under a launcher the user runs (torchrun on each node, accelerate launch) none of this applies: a stopped
worker exits with 3 and the launcher reports it as it does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import STOP_EXIT_CODE

SUPERVISOR_ENV = "QWEN_SFT_SUPERVISOR_DIR"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_early: list[int] = []  # stop signals that came before the trainer (or the supervisor) caught them itself


@contextmanager
def early_stops():
    """`qwen-sft train` from its first moment: a SIGINT / SIGTERM that comes before the trainer catches signals
    (while it imports torch, reads the config, launches) is noted, not a KeyboardInterrupt traceback; the trainer
    takes it over (take_early_stops) and stops before its first step, as a stop during setup does. A second
    interrupt meanwhile exits at once (130), as it does in training."""
    def note(signum, _frame):
        if _early and not (signum == _early[0] == signal.SIGTERM):  # SIGTERM twice: one stop by two paths (SLURM)
            print("\nsecond interrupt: exiting now", file=sys.stderr, flush=True)
            os._exit(130)
        if not _early:
            print(f"\n{signal.Signals(signum).name} received while starting: stopping before the first step",
                  file=sys.stderr, flush=True)
            _early.append(signum)

    old = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        _early.clear()


def take_early_stops() -> list[int]:
    """The stop signals early_stops noted (now the caller's to act on)."""
    taken = list(_early)
    _early.clear()
    return taken


# A SIGTERM this soon after a first SIGTERM is the same stop reaching this process twice (SLURM's scancel signals
# every process, torchrun passes it on), not a second interrupt. A second Ctrl-C (SIGINT) always exits at once.
DUPLICATE_SIGTERM_S = 1.0


class GracefulStop:
    """First SIGINT/SIGTERM: set a flag, the loop saves at the next step boundary. Second: exit now."""

    def __init__(self):
        self.requested = False
        self._first, self._first_at = None, 0.0
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested:
            if signum == self._first == signal.SIGTERM and time.monotonic() - self._first_at < DUPLICATE_SIGTERM_S:
                return  # the same stop by another path (SLURM signals every process, torchrun passes it on too)
            print("\nsecond interrupt: exiting now without saving", file=sys.stderr, flush=True)
            os._exit(130)
        self.requested, self._first, self._first_at = True, signum, time.monotonic()
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the next step boundary "
              "(interrupt again to exit at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        early = take_early_stops()  # a stop that came while the process started (cli.main): already said
        if early:
            self.requested, self._first, self._first_at = True, early[0], time.monotonic()
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def maybe_relaunch(nproc: int | None, argv: list[str]) -> int | None:
    """Run `qwen-sft <argv>` under torchrun when more than one process is wanted, and return its exit code.

    Returns None when this process should train itself: already under a launcher (torchrun on each node of
    a multi-node run, accelerate launch), or a single process. The strategy (DDP, FSDP, DeepSpeed) is set up
    inside the workers from the config's distributed_strategy, so the launcher is the same for all.
    """
    if "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return None
    if nproc is None:
        nproc = visible_gpus()
    if nproc is None:  # no NVIDIA driver to read: ask torch (this process then mostly trains itself, on a CPU)
        import torch

        nproc = torch.cuda.device_count() if torch.cuda.is_available() else 1
    if nproc <= 1:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "qwen_sft.cli", *[a for a in argv if a]]
    print(f"launching {nproc} processes: {' '.join(cmd)}", flush=True)
    sys.stderr.flush()
    return supervise(cmd, torchrun_logs=True)


NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver shows this machine (or container)


def visible_gpus() -> int | None:
    """How many CUDA GPUs this process may use, read without torch, so that the supervisor of a multi-GPU run
    never loads it: the NVIDIA driver's GPUs, narrowed by CUDA_VISIBLE_DEVICES as CUDA reads it (a comma list
    that ends at its first empty or negative entry). None where there is no NVIDIA driver to read."""
    if not NVIDIA_GPUS.is_dir():
        return None
    present = sum(1 for _ in NVIDIA_GPUS.iterdir())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    count = 0
    for item in visible.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        count += 1
    return min(count, present)


POLL_S = 0.1


def supervise(cmd: list[str], torchrun_logs: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="qwen-sft-launch-") as tmp:
        folder = Path(tmp)
        if torchrun_logs:  # torchrun's per-rank error files go here, not to a torchelastic_* folder in /tmp that
            # torchrun leaves behind after every run; the option goes right after torchrun's module name
            at = cmd.index("torch.distributed.run") + 1
            cmd = [*cmd[:at], f"--log-dir={folder / 'torchrun'}", *cmd[at:]]
        received: list[int] = take_early_stops()  # every signal, in order; each worker is sent all of them
        sent: dict[int, int] = {}  # worker pid -> how many of them it has been sent

        def note(signum, _frame):
            # A hang-up (the terminal closed) stops the run as SIGTERM does: the workers catch SIGINT / SIGTERM only.
            received.append(signal.SIGTERM if signum == signal.SIGHUP else signum)

        # SIGHUP too: torchrun is in a session of its own, so a hang-up reaches only this process, which would die
        # of it and leave torchrun and the workers training with no one to stop them. Unless ignored (nohup).
        sigs = [signal.SIGINT, signal.SIGTERM]
        if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
            sigs.append(signal.SIGHUP)
        old = {sig: signal.signal(sig, note) for sig in sigs}
        try:
            child = subprocess.Popen(cmd, env={**os.environ, SUPERVISOR_ENV: tmp}, start_new_session=True,
                                     preexec_fn=_end_with_parent)
            code, ended = None, False
            while code is None:
                try:
                    code = child.wait(timeout=POLL_S)
                except subprocess.TimeoutExpired:
                    pass
                workers = _pids(folder, "pid")
                # A signal waits here until a worker registers (it catches them from then on), so a stop during
                # start-up reaches every worker. Twice with none registered (a start-up that hangs): torchrun ends it.
                if not workers and len(received) > 1 and not ended:
                    _kill(child.pid, signal.SIGTERM)
                    ended = True
                for pid in workers:
                    for sig in received[sent.get(pid, 0):]:
                        _kill(pid, sig)
                    sent[pid] = len(received)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        workers, stopped = _pids(folder, "pid"), _pids(folder, "stopped")
    if workers and workers <= stopped:
        # Every worker saved and stopped. torchrun's own code is 1 when it was signalled too (SLURM's scancel
        # signals every process of the job).
        return STOP_EXIT_CODE
    if len(received) > 1 and code != 0:
        return 130  # interrupted twice: the workers exited at once
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it


def _pids(folder: Path, kind: str) -> set[int]:
    return {int(p.name.split("-")[1]) for p in folder.glob(f"{kind}-*")}


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _end_with_parent() -> None:
    """In torchrun, before exec: SIGTERM when the supervisor dies (kill -9, a closed IDE), so that the run stops
    (torchrun passes it on: a checkpoint) instead of training on, orphaned. Linux only; elsewhere nothing."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _supervisor_dir() -> Path | None:
    folder = os.environ.get(SUPERVISOR_ENV)
    return Path(folder) if folder and Path(folder).is_dir() else None


def register_worker() -> None:
    """Tell a supervising `qwen-sft train` where this worker's signals go (no-op without one)."""
    if folder := _supervisor_dir():
        (folder / f"pid-{os.getpid()}").touch()


def report_stop() -> bool:
    """After a graceful stop: True when a supervisor will give the exit code (this worker should exit 0)."""
    if folder := _supervisor_dir():
        (folder / f"stopped-{os.getpid()}").touch()
    return folder is not None
