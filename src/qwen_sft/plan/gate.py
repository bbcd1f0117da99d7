"""Where the decision is made: train prints the plan's one-line summary before it loads the model, and on CUDA refuses
to start a run the plan says cannot fit (plan_check: false starts it anyway)."""

from __future__ import annotations

import time

from ..errors import UserError


def before_training(cfg, data, accelerator, log=print) -> dict | None:
    """Plan the run on its own data and device; the plan, or None where plan cannot model the model or fails (said in
    one line: a failure of the estimate never stops training). Raises UserError on CUDA when the predicted peak
    exceeds the free memory by more than the plan's error (on any rank: every rank raises), naming the first change
    that fits."""
    import torch

    from . import core, report
    from .command import local_card
    from .data import from_rows

    device = accelerator.device
    cuda = device.type == "cuda"
    facts = from_rows("this run's data", data.train, data.report)
    card = local_card(device) if cuda else None
    try:
        p = core.plan(cfg, card, gpus=accelerator.num_processes, facts=facts, cuda=cuda, suggest=False)
    except UserError as e:
        if accelerator.is_main_process:
            log(f"plan: not available for this model ({e})")
        return None
    except Exception as e:  # the estimate must never be what stops a run from training
        if accelerator.is_main_process:
            log(f"plan: could not be computed ({type(e).__name__}: {e}); training goes on without it "
                "(please report this)")
        return None
    if accelerator.is_main_process:
        log(report.summary_line(p))
    refuse = bool(cuda and cfg.plan_check and p["fits"] is False)
    if accelerator.num_processes > 1:
        flag = torch.tensor(float(refuse), device=device)
        refuse = accelerator.reduce(flag, "sum").item() > 0
    if refuse:
        raise UserError(refusal(cfg, p, card, facts, accelerator.num_processes))
    return p


def refusal(cfg, p: dict, card, facts, gpus: int) -> str:
    from . import core, report
    from .arch import resolve

    free = f"{card.usable_gib:.2f} GiB free" if card is not None else "the free memory of a GPU"
    found = core.suggestions(resolve(cfg.model_name_or_path), cfg, facts, card, gpus, True,
                             time.perf_counter() + 120)
    first = next((s for s in found if s["fits"]), None)
    fix = (f"set {report.change_text(first['change'], first.get('gpus'))} (predicted {first['peak_gib']:.2f} GiB; "
           f"{first['why']})" if first else "no single change found fits; see `qwen-sft plan` for the options")
    return (f"plan_check: this run needs about {p['peak_gib']:.2f} GiB of GPU memory (± {p['error_gib']:.2f}, at the "
            f"{p['peak_at']}), more than the {free}: {fix}. `qwen-sft plan CONFIG` shows the breakdown; "
            "plan_check=false starts it anyway")
