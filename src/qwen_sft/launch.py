"""Multi-process launch through torchrun (one process per GPU), never a home-made launcher."""

from __future__ import annotations

import os
import subprocess
import sys


def maybe_relaunch(nproc: int | None, argv: list[str]) -> int | None:
    """Re-run `qwen-sft <argv>` under torchrun when more than one process is wanted.

    Returns torchrun's exit code, or None when this process should train itself (already under a
    launcher, or a single process).
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
    return subprocess.call(cmd)
