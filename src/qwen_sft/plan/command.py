"""`qwen-sft plan CONFIG [key=value ...] [--gpu NAME | --memory GiB] [--gpus N] [--json]`."""

from __future__ import annotations

import json
from pathlib import Path

from .. import argcheck
from ..errors import UserError


def add_plan_args(sp) -> None:
    sp.add_argument("config", nargs="?", help="the training config (as for train)")
    sp.add_argument("overrides", nargs="*", default=[], metavar="key=value")
    card = sp.add_mutually_exclusive_group()
    card.add_argument("--gpu", help="the card by name: h100, h200, a100-40, a100-80, l40s, l4, rtx3090, rtx4090, "
                      "rtx5090, t4, a10g, a6000, ... (default: this machine's GPU, if any)")
    card.add_argument("--memory", type=float, help="the card's memory in GiB, for a card plan does not know")
    sp.add_argument("--gpus", type=int, default=1, help="processes (GPUs) the run uses, under its distributed_strategy")
    sp.add_argument("--json", action="store_true", help="the plan as one JSON object")


def card_for(gpu: str | None, memory: float | None):
    """The card the plan is for: named, by memory, this machine's GPU (free memory), or None."""
    from . import cards

    if gpu is not None:
        return cards.find(gpu)
    if memory is not None:
        argcheck.number("--memory", memory, above=0)
        return cards.custom(memory)
    return local_card()


def local_card(device=None):
    """This machine's CUDA device, with its free memory now, or None without one."""
    import torch

    from . import cards

    if not torch.cuda.is_available():
        return None
    device = device or torch.device("cuda", torch.cuda.current_device())
    free, total = torch.cuda.mem_get_info(device)
    name = torch.cuda.get_device_name(device)
    try:
        known = cards.find(name)
        tflops = known.bf16_tflops
    except UserError:
        tflops = None
    return cards.Card("local", f"{name} (this machine)", total / 2**30, tflops, "free memory now",
                      free_gib=free / 2**30)


def run_plan(args) -> int:
    from ..config import load_config
    from . import core, report

    if args.config and "=" in args.config and not Path(args.config).exists():
        args.config, args.overrides = None, [args.config, *args.overrides]  # key=value only, as train takes them
    argcheck.number("--gpus", args.gpus, least=1)
    cfg = load_config(args.config, args.overrides)
    card = card_for(args.gpu, args.memory)
    p = core.plan(cfg, card, gpus=args.gpus, cuda=True,
                  log=None if args.json else (lambda m: print(m, flush=True)))
    print(json.dumps(p, indent=2) if args.json else report.format_plan(p))
    return 0
