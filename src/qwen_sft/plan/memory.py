"""Run one training step of the trainer's own code under the counters of sim.py, and scale it to the real depth.

`run_step` is `train.train_step` (one optimizer step over the given micro-batches: forward, backward, gradient
clipping, AdamW, the LR schedule) with the optimizer state already in place, as at every step after the first:
the steady state. Hooks name the segments: per micro-batch the embedding, each layer, the loss ("head"), forward
and backward; then the optimizer. `measure` simulates 2 and 3 repeats of the layer pattern and extrapolates.
"""

from __future__ import annotations

import contextlib

import torch

from . import kernels, sim
from .build import build, quiet

EXTRAPOLATE_FROM = 2  # repeats of the layer pattern in the smaller of the two simulations (first and last)


class OneProcess:
    """What accelerate's Accelerator does for train_step in one process without a gradient scaler (backward and
    clipping), plus the plan's segment marks around backward."""

    num_processes, process_index, is_main_process = 1, 0, True
    device = torch.device("cpu")

    def __init__(self, before_backward, after_backward):
        self.before_backward, self.after_backward = before_backward, after_backward

    def backward(self, loss, **kwargs):
        self.before_backward()
        loss.backward(**kwargs)
        self.after_backward()

    def clip_grad_norm_(self, parameters, max_norm, norm_type=2):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type=norm_type)

    def no_sync(self, module):
        return contextlib.nullcontext()


class _NoStop:
    requested = False


def frozen_bytes(model) -> int:
    """Bytes of the frozen parameters and the buffers (each storage once)."""
    seen, total = set(), 0
    for t in [p for p in model.parameters() if not p.requires_grad] + list(model.buffers()):
        st = t.untyped_storage()
        if id(st) not in seen:
            seen.add(id(st))
            total += st.nbytes()
    return total


def roles(k: int, layers: int, period: int) -> tuple:
    """Which layer k is, for extrapolation: ((first | low | high | last | mid), position in the pattern) for each
    role it plays (with 3 repeats the middle one is both the second and the second-last)."""
    n, p, j = layers // period, k // period, k % period
    names = [r for r, at in (("first", 0), ("low", 1), ("high", n - 2), ("last", n - 1)) if p == at and 0 <= at < n]
    return tuple((r, j) for r in (names or ["mid"]))


def layer_counts(model) -> dict:
    """Parameter counts for the FLOPs estimate: decoder matrices (frozen), LoRA, vocab x hidden."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = sum(getattr(m, "in_features", 0) * getattr(m, "out_features", 0) if hasattr(m, "compute_dtype") else
                  sum(p.numel() for p in m.parameters(recurse=False) if p.dim() >= 2 and not p.requires_grad)
                  for m in lm.model.layers.modules())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layer_frozen = sum(p.numel() * p.element_size() for p in lm.model.layers.parameters() if not p.requires_grad)
    return {"decoder": decoder, "lora": trainable, "head": lm.config.vocab_size * lm.config.hidden_size,
            "layer_frozen": layer_frozen}


def run_step(model, frozen: int, cfg, micro: dict, cuda: bool, period: int, skip: bool = True,
             micros: list[dict] | None = None) -> sim.Measured:
    """The worst moment of a steady-state optimizer step of `model` whose micro-batches are all `micro`, counted;
    skip: stand-in arithmetic (SkipArithmetic).

    With gradient accumulation, every micro-batch after the first holds at each moment what the first holds plus
    the gradients the first left, and during its forward what the one before it left (the previous loss's graph
    keeps its input embeddings, which PEFT makes require grad, and their gradient): so two micro-batches run, with
    the gradients of earlier ones in place. train_step runs them, then clipping, AdamW and the schedule.
    micros (tests): run these micro-batches from no gradient instead."""
    from .. import train
    from ..loss import CausalLMLoss

    loss_fn = CausalLMLoss(model, cfg.loss_chunk_size)
    params = [p for p in loss_fn.parameters() if p.requires_grad]
    optimizer = train.make_optimizer(loss_fn, cfg)
    if cuda:  # AdamW's default on CUDA tensors (its temporaries span every parameter at once)
        for group in optimizer.param_groups:
            group["foreach"] = True
    scheduler = train.make_scheduler(optimizer, cfg, 1000)
    skipping = sim.SkipArithmetic() if skip else contextlib.nullcontext()
    with skipping:  # the state of every step after the first: AdamW's moments exist (a zero gradient moves nothing)
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        if cfg.gradient_accumulation_steps == 1 or micros is not None:
            optimizer.zero_grad(set_to_none=True)
    if micros is None:
        micros = [micro, micro] if cfg.gradient_accumulation_steps > 1 else [micro]

    tracker = sim.LiveBytes(round_to=sim.CUDA_BLOCK if cuda else 1, skip=skip)
    lm = loss_fn.causal_lm()
    layers = list(lm.model.layers)
    where = {"micro": 0, "dir": "fwd"}
    grads: set[int] = set()

    def enter(role):
        tracker.enter_segment((where["micro"], where["dir"], role))

    def before_backward():
        where["dir"] = "bwd"
        enter(("head",))

    def after_backward():
        grads.update(s for s in (tracker.serial_of(p.grad) for p in params if p.grad is not None) if s is not None)
        where["micro"] += 1
        where["dir"] = "fwd"
        enter(("embed",))

    def output_hook(k):
        def hook(module, args, out):
            t = out[0] if isinstance(out, tuple) else out
            if where["dir"] == "fwd" and isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(lambda g: enter(roles(k, len(layers), period)))
        return hook

    handles = [lm.model.embed_tokens.register_forward_pre_hook(lambda m, a: enter(("embed",))),
               lm.model.norm.register_forward_hook(lambda m, a, o: enter(("head",))),
               optimizer.register_step_pre_hook(lambda o, a, k: tracker.enter_segment((None, "opt", ("opt",))))]
    for k, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(lambda m, a, k=k: enter(roles(k, len(layers), period))))
        handles.append(layer.register_forward_hook(output_hook(k)))
    run = train.Run(cfg=cfg, accelerator=OneProcess(before_backward, after_backward), run_dir=None, tokenizer=None,
                    data=None, record={}, loss_fn=loss_fn, module=loss_fn, optimizer=optimizer, scheduler=scheduler,
                    plan=None, collator=None, val_loader=None, val_counted=0)
    try:
        with tracker:
            enter(("embed",))
            # Tensors from before the step are followed so that their views are not taken for new storage: the
            # frozen weights and buffers (counted in `frozen`) at 0 bytes, the batch (a CUDA run copies it to
            # the device for the step) at its size on a CUDA target.
            for t in [p for p in loss_fn.parameters() if not p.requires_grad] + list(loss_fn.buffers()):
                tracker.track(t, count=False)
            for t in (v for m in micros for v in m.values()):
                tracker.track(t, count=cuda)
            for p in params:
                tracker.track(p)
                if p.grad is not None:  # the gradients of the micro-batches before this one
                    tracker.track(p.grad)
                    grads.add(tracker.serial_of(p.grad))
            state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
            for t in state:  # (AdamW keeps its step counts on the CPU of a CUDA run)
                tracker.track(t, count=t.numel() > 1 or not cuda)
            states = {tracker.serial_of(t) for t in state}
            lora = {tracker.serial_of(p) for p in params}
            train.train_step(run, micros, _NoStop())
            tracker.snapshot()
    finally:
        for h in handles:
            h.remove()
    peaks = _one_role_each(sim.classify(tracker, frozen, lora, grads, states))
    lora_bytes = sum(p.numel() * p.element_size() for p in params)
    return sim.Measured(peaks, frozen, lora_bytes, len(layers), layer_counts(model))


def _one_role_each(peaks: dict) -> dict:
    """A segment of a layer playing several roles counts for each of them."""
    out = {}
    for (micro, direction, role), peak in peaks.items():
        for r in (role if role and isinstance(role[0], tuple) else (role,)):
            out[(micro, direction, r)] = peak
    return out


def simulate(arch, cfg, micro: dict, cuda: bool, layers: int) -> sim.Measured:
    """run_step on the architecture with `layers` layers, built as train builds it."""
    from ..layers import attention

    dtype = torch.bfloat16 if cuda and cfg.bf16 else torch.float32
    attn = attention.NAME if cfg.attn_implementation in ("auto", "flash_attention_2") else cfg.attn_implementation
    period = arch.period if layers % arch.period == 0 else 1  # (roles only matter to extrapolate)
    swaps = kernels.cuda_kernels() + arch.cuda_kernels() if cuda else []
    # fork_rng: the small ops that run for real draw from the CPU generator (dropout); a training process that plans
    # first must draw what it would have drawn without the plan.
    with sim.LOCK, torch.random.fork_rng(devices=[]), kernels.swapped(*swaps), quiet():
        model, frozen = build(arch, cfg, layers, dtype, attn)
        return run_step(model, frozen, cfg, micro, cuda, period)


def measure(arch, cfg, micro: dict, cuda: bool) -> sim.Measured:
    """The step's peak at the architecture's real depth: simulated whole when it is shallow (or not a whole number
    of repeats of its layer pattern), else extrapolated from 2 and 3 repeats."""
    period, layers = arch.period, arch.layers
    n = layers // period
    if layers % period or n <= EXTRAPOLATE_FROM + 1:
        return simulate(arch, cfg, micro, cuda, layers)
    a = simulate(arch, cfg, micro, cuda, EXTRAPOLATE_FROM * period)
    b = simulate(arch, cfg, micro, cuda, (EXTRAPOLATE_FROM + 1) * period)
    return sim.extrapolate(a, b, EXTRAPOLATE_FROM, n)
