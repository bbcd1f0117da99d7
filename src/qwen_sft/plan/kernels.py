"""What a CUDA run's kernels keep, stood in on the CPU (a CUDA target only; a CPU target runs the real code).

- attention: flash / cuDNN SDPA keeps q, k, v, the output and a [B, H, T] fp32 log-sum-exp (calibrated against
  the H200 measurements, docs/benchmarks.md);
- dropout: CUDA's fused kernel keeps a bool mask (the CPU keeps a float noise tensor);
- activation offload: save_on_cpu moves a saved tensor off the device and allocates it again when unpacked;
- Qwen3.5's Gated DeltaNet: flash-linear-attention's chunk kernel (what a GPU run uses when fla is installed; the
  torch fallback transformers has without it keeps far more, and takes minutes to simulate). Modelled on fla's
  chunk_gated_delta_rule: forward keeps the l2-normed q and k with their rstd, v, the chunk-local cumulative gate,
  beta and the [T, 64] WY matrix per head; backward recomputes w, u, the per-chunk states h and v_new, then holds
  dh, dv, dq, dk, dw, dg and their WY counterparts. causal-conv1d keeps its input; packed rows go through the
  layer once with their boundaries (layers/recurrent.py's CUDA path). Not measured on a GPU.
"""

from __future__ import annotations

import contextlib

import torch

FLA_CHUNK = 64


class _FlashLike(torch.autograd.Function):
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


def flash_like_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _FlashLike.apply(query, key, value)


def cuda_like_dropout(input, p=0.5, training=True, inplace=False):
    """F.dropout as on CUDA: the fused kernel, which keeps a bool mask."""
    if not training or p == 0:
        return input
    return torch.native_dropout(input, p, True)[0]


def offload_like(enabled: bool, device):
    """save_on_cpu's effect on device memory: a saved tensor leaves, and is allocated again when unpacked."""
    if not enabled:
        return contextlib.nullcontext()
    pack = lambda t: (t.shape, t.stride(), t.dtype)  # noqa: E731
    unpack = lambda p: torch.empty_strided(p[0], p[1], dtype=p[2])  # noqa: E731
    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


class _FlaChunkLike(torch.autograd.Function):
    """The tensors flash-linear-attention's chunk_gated_delta_rule allocates and keeps (see the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta):
        b, t, hv, dv = v.shape
        dk = k.shape[-1]
        nt = -(-t // FLA_CHUNK)
        f32 = torch.float32
        qn, kn = torch.empty_like(q), torch.empty_like(k)
        q_rstd, k_rstd = q.new_empty(q.shape[:-1], dtype=f32), k.new_empty(k.shape[:-1], dtype=f32)
        gc = g.new_empty((b, t, hv), dtype=f32)
        a32 = k.new_empty((b, t, hv, FLA_CHUNK), dtype=f32)
        a = k.new_empty((b, t, hv, FLA_CHUNK))
        del a32
        w, u = k.new_empty((b, t, hv, dk)), k.new_empty((b, t, hv, dv))
        h, v_new = k.new_empty((b, nt, hv, dk, dv)), k.new_empty((b, t, hv, dv))
        o = torch.empty_like(v, dtype=q.dtype)
        del w, u, h, v_new
        ctx.save_for_backward(qn, q_rstd, kn, k_rstd, v, gc, beta, a)
        ctx.shapes = (q.shape, k.shape, g.dtype)
        return o

    @staticmethod
    def backward(ctx, do):
        qn, _, kn, _, v, gc, beta, a = ctx.saved_tensors
        b, t, hv, dv = v.shape
        dk = kn.shape[-1]
        nt = -(-t // FLA_CHUNK)
        f32 = torch.float32
        w, u = kn.new_empty((b, t, hv, dk)), kn.new_empty((b, t, hv, dv))
        h, v_new = kn.new_empty((b, nt, hv, dk, dv)), kn.new_empty((b, t, hv, dv))
        d_v = kn.new_empty((b, t, hv, dv))
        dh = kn.new_empty((b, nt, hv, dk, dv))
        d_v2 = kn.new_empty((b, t, hv, dv))
        dq, dkk, dw = (kn.new_empty((b, t, hv, dk), dtype=f32) for _ in range(3))
        dg = kn.new_empty((b, t, hv), dtype=f32)
        dk2, dvv = kn.new_empty((b, t, hv, dk), dtype=f32), kn.new_empty((b, t, hv, dv))
        db, dg2 = kn.new_empty((b, t, hv), dtype=f32), kn.new_empty((b, t, hv), dtype=f32)
        del w, u, h, v_new, d_v, dh, d_v2, dw, dk2, dg2
        q_shape, k_shape, g_dtype = ctx.shapes
        return (dq.new_empty(q_shape, dtype=qn.dtype), dkk.new_empty(k_shape, dtype=kn.dtype), dvv.to(v.dtype),
                dg.to(g_dtype), db.to(beta.dtype))


def fla_like_chunk_gated_delta_rule(query, key, value, g, beta, chunk_size=64, initial_state=None,
                                    output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
    o = _FlaChunkLike.apply(query, key, value, g, beta)
    state = None
    if output_final_state:
        b, _, hv, dv = value.shape
        state = value.new_empty((b, hv, key.shape[-1], dv), dtype=torch.float32)
    return o, state


class _ConvLike(torch.autograd.Function):
    """causal-conv1d with its fused activation: keeps its input and weight."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, grad):
        x, _ = ctx.saved_tensors
        return torch.empty_like(x), None


def conv_like_causal_conv1d(hidden_states, weight, bias=None, activation=None, **kwargs):
    return _ConvLike.apply(hidden_states, weight)


def kernel_path_apart(self, own, hidden_states, lens, kwargs):
    """layers/recurrent.py's _apart as on CUDA with the kernels installed: one call over the whole row with the
    examples' boundaries (the stand-ins above take them), not one call per example."""
    from ..layers.recurrent import boundaries

    cu, seq_idx = boundaries(lens, hidden_states.device)
    return own(self, hidden_states, cu_seq_lens_q=cu, seq_idx=seq_idx, **kwargs)


def family_kernels(family) -> list:
    """The stand-ins for a family's own CUDA kernels: those of its stateful layers (families.py's row)."""
    if "Qwen3_5GatedDeltaNet" not in family.stateful_layers:
        return []
    from transformers.models.qwen3_5 import modeling_qwen3_5

    from ..layers import recurrent

    return [(modeling_qwen3_5, "torch_chunk_gated_delta_rule", fla_like_chunk_gated_delta_rule),
            (modeling_qwen3_5, "causal_conv1d_fn", conv_like_causal_conv1d),
            (recurrent, "_apart", kernel_path_apart)]


@contextlib.contextmanager
def swapped(*items):
    """(object, attribute name, replacement) swapped in for the duration."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in items]
    for obj, name, new in items:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


def cuda_kernels():
    """The stand-ins every family gets on a CUDA target (attention, dropout, activation offload)."""
    import torch.nn.functional as F

    from .. import train

    return [(F, "scaled_dot_product_attention", flash_like_sdpa), (F, "dropout", cuda_like_dropout),
            (train, "offload_saved_tensors", offload_like)]
