"""Multi-process launch through torchrun (one process per GPU), never a home-made launcher."""

from __future__ import annotations

import os
import sys


def maybe_relaunch(nproc: int | None, argv: list[str]) -> int | None:
    """Re-run `qwen-sft <argv>` under torchrun when more than one process is wanted.

    torchrun replaces this process (exec), so a Ctrl-C or SIGTERM reaches it directly and it passes the
    signal on to every worker (each saves a checkpoint at the next step boundary and exits). Returns None
    when this process should train itself: already under a launcher (torchrun on each node of a multi-node
    run, accelerate launch), or a single process. The strategy (DDP, FSDP, DeepSpeed) is set up inside the
    workers from the config's distributed_strategy, so the launcher is the same for all.
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
    os.execv(sys.executable, cmd)
