"""Multi-process launch through torchrun (one process per GPU), never a home-made launcher.

`qwen-sft train --nproc N` (or several visible GPUs) runs torchrun as a child and stays as its supervisor,
so that a graceful stop ends the way it does in one process: a checkpoint, a one-line message, exit code 3.
Without that, torchrun turns a stop into a traceback of its own and exit code 1 (it reports any signal it
gets, and any worker's non-zero exit, as a failure). The protocol, through a temporary directory named in
the workers' environment:
  - each worker writes `pid-<pid>` when it starts catching signals (train.train);
  - the supervisor passes SIGINT / SIGTERM straight to those workers, not to torchrun (torchrun runs in a
    session of its own, so a terminal's Ctrl-C reaches only the supervisor); the workers agree on a step,
    save, and each writes `stopped-<pid>` and exits 0, so torchrun ends quietly;
  - the supervisor then exits with 3. A second interrupt reaches the workers the same way: they exit at once (exit code 130).
Under a launcher the user runs (torchrun on each node, accelerate launch) none of this applies: a stopped
worker exits with 3 and the launcher reports it as it does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

SUPERVISOR_ENV = "QWEN_SFT_SUPERVISOR_DIR"


def maybe_relaunch(nproc: int | None, argv: list[str]) -> int | None:
    """Run `qwen-sft <argv>` under torchrun when more than one process is wanted, and return its exit code.

    Returns None when this process should train itself: already under a launcher (torchrun on each node of
    a multi-node run, accelerate launch), or a single process. The strategy (DDP, FSDP, DeepSpeed) is set up
    inside the workers from the config's distributed_strategy, so the launcher is the same for all.
    """
    if "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return None
    if nproc is None:
        import torch

        nproc = torch.cuda.device_count() if torch.cuda.is_available() else 1
    if nproc <= 1:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "qwen_sft.cli", *[a for a in argv if a]]
    print(f"launching {nproc} processes: {' '.join(cmd)}", flush=True)
    sys.stderr.flush()
    return supervise(cmd)


def supervise(cmd: list[str]) -> int:
    from .train import STOP_EXIT_CODE

    with tempfile.TemporaryDirectory(prefix="qwen-sft-launch-") as tmp:
        folder = Path(tmp)
        child = subprocess.Popen(cmd, env={**os.environ, SUPERVISOR_ENV: tmp}, start_new_session=True)

        received = []

        def forward(signum, _frame):
            received.append(signum)
            # A hang-up (the terminal closed) stops the run as SIGTERM does: the workers catch SIGINT / SIGTERM only.
            signum = signal.SIGTERM if signum == signal.SIGHUP else signum
            # Before any worker has registered (still importing), torchrun itself takes it.
            pids = [int(p.name.split("-")[1]) for p in folder.glob("pid-*")] or [child.pid]
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

        # SIGHUP too: torchrun is in a session of its own, so a hang-up reaches only this process, which would die
        # of it and leave torchrun and the workers training with no one to stop them. Unless ignored (nohup).
        sigs = [signal.SIGINT, signal.SIGTERM]
        if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
            sigs.append(signal.SIGHUP)
        old = {sig: signal.signal(sig, forward) for sig in sigs}
        try:
            code = child.wait()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        stopped = any(folder.glob("stopped-*"))
    if stopped and code == 0:
        return STOP_EXIT_CODE
    return 130 if len(received) > 1 and code != 0 else code  # interrupted twice: the workers exited at once


def register_worker() -> None:
    """Tell a supervising `qwen-sft train` where this worker's signals go (no-op without one)."""
    folder = os.environ.get(SUPERVISOR_ENV)
    if folder and Path(folder).is_dir():
        (Path(folder) / f"pid-{os.getpid()}").touch()


def report_stop() -> bool:
    """After a graceful stop: True when a supervisor will give the exit code (this worker should exit 0)."""
    folder = os.environ.get(SUPERVISOR_ENV)
    if not (folder and Path(folder).is_dir()):
        return False
    (Path(folder) / f"stopped-{os.getpid()}").touch()
    return True
