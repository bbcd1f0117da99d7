#!/usr/bin/env python
"""Peak GPU memory of the GPU check's approaches, predicted on a CPU (no GPU, no big matmuls).

    python bench/memory_model.py                              # ours, ours-unfused, ours-offload (2 x 4096)
    python bench/memory_model.py --approaches naive,ours --steps 2
    python bench/memory_model.py --model qwen3.5-4b           # Qwen3.5-4B's text model (Gated DeltaNet layers)

Runs the GPU check's own code (bench/gpu_check.py: same model config, rows, LoRA, Runner, AdamW), but
on the CPU in bf16 under CPU autocast, with substitutions that keep every tensor shape, dtype and
lifetime and drop the arithmetic:
- every op on a large tensor (>= 2^16 elements) gets uninitialized outputs of the shape and strides its
  meta kernel gives, instead of computing (in-place ones just return their input); small ones (ids,
  position_ids, targets, scalars), views, and ops whose output shape depends on data (boolean
  indexing) run for real;
- attention is a stand-in for the flash kernel: it keeps q, k, v, the output and a [B, H, T] fp32
  log-sum-exp for backward, as flash / cuDNN attention do;
- dropout keeps a bool mask, as CUDA's fused dropout does (on CPU torch keeps a float noise tensor);
- the frozen bf16 weights are zero-stride views of one element (counted at full size).
The figure is the peak of live tensor bytes (every storage an op creates, until it is freed): what
torch.cuda.max_memory_allocated counts, without the CUDA caching allocator's 512-byte rounding and
cuBLAS workspaces. Calibration against the H200 measurements is in docs/benchmarks.md.

A model, not a measurement: it cannot see liger-kernel (Triton) or an allocator's fragmentation.

--model qwen3.5-4b: the Gated DeltaNet layers' kernels are stand-ins for what flash-linear-attention's chunked
gated delta rule and causal-conv1d keep for backward (q, k, v, the gate g, beta and the [B, T, H, 64] chunk
matrix; the conv's input), not transformers' PyTorch fallback, whose chunked loop keeps far more. Uncalibrated
until a GPU run of gpu_check.py --model qwen3.5-4b (docs/benchmarks.md, "Next on a GPU").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402  (also puts src/ on sys.path)

BIG = 1 << 16
ALIASING = {torch.ops.aten._unsafe_view.default}  # a view whose schema does not say so


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage an op returns, from creation until Python frees it."""

    def __init__(self, start: int = 0):
        super().__init__()
        self.live = self.peak = start
        self.alive: dict[int, weakref.ref] = {}
        self.phase, self.op, self.at = "", "", ""  # where the peak was reached
        self.big: dict[int, str] = {}  # what the large live storages are (for --breakdown)
        self.snapshot: list[tuple[int, str]] = []  # the large live storages at the peak
        self.breakdown = False

    def track(self, t, count: bool = True):
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            st = t.untyped_storage()
            if id(st) not in self.alive and st.nbytes():
                n, key = (st.nbytes() if count else 0), id(st)
                self.alive[key] = weakref.ref(st, lambda _, key=key, n=n: self.free(key, n))
                self.live += n
                if self.breakdown and n >= 8 << 20:
                    self.big[key] = f"{self.op} {tuple(t.shape)} {str(t.dtype)[6:]} in {_caller()}"
                if self.live > self.peak:
                    self.peak, self.at = self.live, f"{self.phase}: {self.op} in {_caller()}"
                    if self.breakdown:
                        self.snapshot = [(self.alive_bytes(k), d) for k, d in self.big.items()]
        return t

    def free(self, key, n):
        self.alive.pop(key, None)
        self.big.pop(key, None)
        self.live -= n

    def alive_bytes(self, key) -> int:
        st = self.alive[key]()
        return st.nbytes() if st is not None else 0

    def reset_peak(self):
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.op = func.__name__
        tree_map(self.track, out)
        return out


class SkipArithmetic(TorchDispatchMode):
    """Large floating-point ops return uninitialized tensors of the right shape instead of computing."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if (not any(t.numel() >= BIG for t in tensors) or func in ALIASING
                or any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)):
            return func(*args, **kwargs)  # small (ids, positions, targets, scalars) or a view: real
        if func._schema.is_mutable:
            return args[0]  # in place: the tensor stays what it was
        try:
            meta = func(*tree_map(_to_meta, args), **tree_map(_to_meta, kwargs))
        except (NotImplementedError, RuntimeError):  # data-dependent shapes (boolean indexing): real
            return func(*args, **kwargs)
        return tree_map(lambda m: torch.empty_strided(m.shape, m.stride(), dtype=m.dtype)
                        if isinstance(m, torch.Tensor) else m, meta)


def _caller() -> str:
    """file:function of the innermost frame outside torch and this file."""
    import traceback

    for f in reversed(traceback.extract_stack()):
        if "/torch/" not in f.filename and not f.filename.endswith("memory_model.py"):
            return f"{Path(f.filename).name}:{f.name}:{f.lineno}"
    return "?"


def _to_meta(x):
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta") if isinstance(x, torch.Tensor) else x


class _FlashLike(torch.autograd.Function):
    """What flash attention keeps: q, k, v, out and a [B, H, T] fp32 log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def cuda_like_dropout(input, p=0.5, training=True, inplace=False):
    """F.dropout as on CUDA: the fused kernel, which keeps a bool mask (on CPU, torch keeps a float noise tensor)."""
    if not training or p == 0:
        return input
    return torch.native_dropout(input, p, True)[0]


def flash_like_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _FlashLike.apply(query, key, value)


@contextlib.contextmanager
def offload_like(enabled: bool, device):
    """save_on_cpu's effect on device memory: a saved tensor leaves, and is allocated again when unpacked."""
    if not enabled:
        yield
        return
    pack = lambda t: (t.shape, t.stride(), t.dtype)  # noqa: E731
    unpack = lambda p: torch.empty_strided(p[0], p[1], dtype=p[2])  # noqa: E731
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


def _print_breakdown(peak: int, items: list[tuple[int, str]], frozen: int) -> None:
    import collections

    groups = collections.defaultdict(lambda: [0, 0])
    for n, desc in items:
        groups[desc][0] += n
        groups[desc][1] += 1
    print(f"  at the peak ({peak / 2**30:.2f} GiB): {frozen / 2**30:.2f} GiB frozen weights; tensors >= 8 MiB:")
    for desc, (n, count) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        print(f"    {n / 2**20:8.0f} MiB  {count:3d} x {desc}")
    rest = peak - frozen - sum(n for n, _ in items)
    print(f"    {rest / 2**20:8.0f} MiB  everything smaller (LoRA weights, grads and AdamW state are per-tensor < 8 MiB)")


class _GatedDeltaLike(torch.autograd.Function):
    """What flash-linear-attention's chunk_gated_delta_rule keeps: q, k, v, g, beta and the [B, T, H, 64] chunk
    matrix (the chunk states are recomputed in its backward)."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta):
        chunk = torch.empty(*beta.shape, 64, dtype=q.dtype)
        ctx.save_for_backward(q, k, v, g, beta, chunk)
        return torch.empty(v.shape, dtype=v.dtype)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, g, beta, _ = ctx.saved_tensors
        return tuple(torch.empty_like(t) for t in (q, k, v, g, beta))


class _ConvLike(torch.autograd.Function):
    """causal-conv1d with its fused activation: keeps its input and weight."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return torch.empty_like(x), None


def gated_delta_like(query, key, value, g, beta, initial_state=None, output_final_state=False, **kwargs):
    return _GatedDeltaLike.apply(query, key, value, g, beta), None


def conv_like(hidden_states, weight, bias=None, activation=None, **kwargs):
    return _ConvLike.apply(hidden_states, weight)


def build(rank: int, model_name: str = "qwen3-4b"):
    from transformers import AutoConfig, AutoModelForCausalLM

    from qwen_sft.layers import attention
    from qwen_sft.config import build_config
    from qwen_sft.families import family_of
    from qwen_sft.loss import CausalLMLoss
    from qwen_sft.model import wrap_lora

    base = gpu_check.model_config(model_name, tiny=False)
    attention.register()
    config = AutoConfig.for_model(**base)
    config.use_cache = False
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attention.NAME)
    frozen, stand_ins = 0, {}
    for module in model.modules():  # zero-stride stand-ins for the weights (tied ones once), counted at full size
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) not in stand_ins:
                frozen += p.numel() * p.element_size()
                data = torch.empty((), dtype=p.dtype).expand(p.shape) if p.dim() > 1 else torch.ones(p.shape, dtype=p.dtype)
                stand_ins[id(p)] = torch.nn.Parameter(data, requires_grad=False)
            setattr(module, name, stand_ins[id(p)])
    rotary = model.model.rotary_emb
    rotary.register_buffer("inv_freq", torch.ones(rotary.inv_freq.shape), persistent=False)
    rotary.original_inv_freq = rotary.inv_freq
    family = family_of(config)
    if family.keep_rows_apart is not None:
        family.keep_rows_apart(model)
    if family.stateful_layers:  # the CUDA kernels' footprint, not the PyTorch fallback's
        from transformers.models.qwen3_5 import modeling_qwen3_5

        modeling_qwen3_5.torch_chunk_gated_delta_rule = gated_delta_like
        modeling_qwen3_5.causal_conv1d_fn = conv_like
    cfg = build_config({"lora_rank": rank, "lora_alpha": 2 * rank, "gradient_checkpointing": True})
    model = wrap_lora(model, cfg).train()
    lora = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return config, model, CausalLMLoss(model, cfg.loss_chunk_size), frozen, lora, cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--approaches", default="ours,ours-unfused,ours-offload")
    ap.add_argument("--model", default="qwen3-4b", choices=["qwen3-4b", "qwen3.5-4b"])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4,
                    help="steps per approach (the check runs 8; with its default rows the peak comes at the 4th)")
    ap.add_argument("--unfused", action="store_true",
                    help="PEFT's own LoRA forward in every approach (the code the H200 figures were measured with)")
    ap.add_argument("--breakdown", action="store_true", help="list the large tensors alive at each approach's peak")
    ap.add_argument("--out", default=None, help="write memory_model.json here")
    a = ap.parse_args()

    t0 = time.perf_counter()
    config, model, module, frozen, lora, cfg = build(a.rank, a.model)
    steps_rows = gpu_check.make_rows(a.steps, a.batch, a.seq, 0.3, config.vocab_size, seed=0)
    print(f"{'Qwen3.5-4B' if a.model == 'qwen3.5-4b' else 'Qwen3-4B'} architecture: {frozen / 2**30:.2f} GiB of bf16 weights (stand-ins), {lora / 2**30:.2f} GiB of "
          f"fp32 LoRA r{a.rank}; {a.steps} steps of {a.batch} rows, {int(a.seq * 0.75)}-{a.seq} tokens; built in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
    torch.nn.functional.scaled_dot_product_attention = flash_like_sdpa  # seen by transformers and sdpa_packed
    torch.nn.functional.dropout = cuda_like_dropout  # nn.Dropout (PEFT's lora_dropout) calls it
    import qwen_sft.train

    qwen_sft.train.offload_saved_tensors = offload_like
    pad_id = config.eos_token_id if isinstance(config.eos_token_id, int) else 151643
    runner = gpu_check.Runner(model, module, torch.device("cpu"), torch.bfloat16, pad_id,
                              {"default": "sdpa_packed", "plain": "sdpa"}, cfg.loss_chunk_size)
    lora_init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    results = {}
    for name in [x for x in a.approaches.split(",") if x]:
        variant = dict(gpu_check.VARIANTS[name], **({"fused": False, "norm_mlp": False} if a.unfused else {}))
        if variant.get("liger") or "flex" in name:
            print(f"{name}: not modelled (Triton / compiled kernels)")
            continue
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in lora_init:
                    p.copy_(lora_init[n])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        runner.setup(variant)
        t = time.perf_counter()
        peaks = []
        with SkipArithmetic(), LiveBytes(start=frozen) as tracker:  # the tracker sees the ops first
            tracker.breakdown = a.breakdown
            # Tensors from before the modes: the frozen weights (counted at full size in `frozen`), the LoRA
            # weights and the check's copy of them on the GPU (lora_init, to restart every approach from the
            # same weights), which count in its peak too.
            for p in model.parameters():
                tracker.track(p, count=p.requires_grad)
            for t_ in lora_init.values():
                tracker.track(t_)
            tracker.reset_peak()
            for rows in steps_rows:
                tracker.reset_peak()
                tracker.phase = "forward + backward"
                runner.forward_backward(rows, runner.batch(rows))
                tracker.phase = "optimizer step"
                optimizer.step()
                print(f"  step peak {tracker.peak / 2**30:.2f} GiB at {tracker.at}", flush=True)
                if a.breakdown and tracker.peak >= max(peaks, default=0):
                    worst = (tracker.peak, tracker.snapshot)
                optimizer.zero_grad(set_to_none=True)
                peaks.append(tracker.peak)
        if a.breakdown:
            _print_breakdown(*worst, frozen=frozen)
        results[name] = {"peak_gib": max(peaks) / 2**30, "per_step_gib": [p / 2**30 for p in peaks],
                         "seconds": time.perf_counter() - t}
        print(f"{name:<16} peak {max(peaks) / 2**30:6.2f} GiB  (steps: "
              f"{', '.join(f'{p / 2**30:.2f}' for p in peaks)}; {time.perf_counter() - t:.0f}s)", flush=True)
        del optimizer
    if a.out:
        Path(a.out).write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
