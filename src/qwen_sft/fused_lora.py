"""PEFT's LoRA branch as one autograd function: fewer full-size kernels, less saved memory, same math.

PEFT computes `result + lora_B(lora_A(dropout(x))) * scaling`. The multiply and the add each read and
write a full [tokens x out] tensor, in the forward and again in every checkpoint recomputation, and
autograd keeps the dropped-out copy of x and its mask for every adapted projection (q, k and v each keep
their own copy of the same input). Here:

- forward: one dropout kernel, h = dropout(x) @ A^T (rank-wide), then `addmm(result, h, B^T,
  alpha=scaling)` adds the scaled branch inside the matrix product;
- saved for backward: x (one tensor shared by the projections that read it), the small h, and the RNG
  state before the dropout, from which the backward regenerates the same mask.

Results, dropout masks and the global RNG stream are those of PEFT (tests/unit/test_fused_lora.py);
the adapter weights PEFT saves and merges are untouched. Calls it does not cover (evaluation without
gradient, several or disabled adapters, DoRA, quantized or non-Linear base layers, dtypes autocast does
not line up) go through PEFT's own forward.
"""

from __future__ import annotations

import logging
import types

import torch
from torch import nn

log = logging.getLogger("qwen_sft")


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


class _LoraBranch(torch.autograd.Function):
    """result + scaling * dropout_p(x) @ A^T @ B^T, all matmuls in result's dtype."""

    @staticmethod
    def forward(ctx, result, x, weight_a, weight_b, scaling: float, p: float):
        dtype = result.dtype
        x2 = x.reshape(-1, x.shape[-1])
        rng = None
        if p > 0:
            rng = _rng_state(x.device)
            xd, _ = torch.native_dropout(x2, p, True)  # the kernel nn.Dropout runs; its mask is not kept
        else:
            xd = x2
        a, b = weight_a.to(dtype), weight_b.to(dtype)  # under autocast: bf16 copies of the small fp32 weights
        h = xd @ a.T
        out = torch.addmm(result.reshape(-1, result.shape[-1]), h, b.T, alpha=scaling)
        ctx.save_for_backward(x, h, weight_a, weight_b)
        ctx.scaling, ctx.p, ctx.rng = scaling, p, rng
        return out.view(result.shape)

    @staticmethod
    def backward(ctx, grad_out):
        x, h, weight_a, weight_b = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])
        a, b = weight_a.to(g.dtype), weight_b.to(g.dtype)
        x2 = x.reshape(-1, x.shape[-1])
        mask = None
        if ctx.p > 0:
            # The same mask as the forward: same RNG state, same kernel, same shape. The caller's RNG stream
            # is put back afterwards, so training draws exactly what it would without this function.
            now = _rng_state(x.device)
            _set_rng_state(x.device, ctx.rng)
            xd, mask = torch.native_dropout(x2, ctx.p, True)
            _set_rng_state(x.device, now)
        else:
            xd = x2
        gh = (g @ b) * ctx.scaling  # [N, r]
        grad_b = (g.T @ h) * ctx.scaling if ctx.needs_input_grad[3] else None
        grad_a = gh.T @ xd if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = gh @ a
            if mask is not None:
                grad_x = torch.ops.aten.native_dropout_backward(grad_x, mask, 1.0 / (1.0 - ctx.p))
            grad_x = grad_x.view(x.shape)
        return (grad_out if ctx.needs_input_grad[0] else None, grad_x,
                None if grad_a is None else grad_a.to(weight_a.dtype),
                None if grad_b is None else grad_b.to(weight_b.dtype), None, None)


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    adapter = self.active_adapters[0] if len(self.active_adapters) == 1 else None
    if (args or kwargs or adapter is None or not torch.is_grad_enabled() or self.disable_adapters or self.merged
            or adapter not in self.lora_A or adapter in self.lora_variant or self.lora_B[adapter].bias is not None):
        return type(self).forward(self, x, *args, **kwargs)
    weight_a, weight_b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
    device_type = x.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight_a.dtype
    result = self.base_layer(x)
    if x.dtype != dtype or result.dtype != dtype:
        return type(self).forward(self, x, *args, **kwargs)  # rare (e.g. fp32 activations under bf16 autocast)
    dropout = self.lora_dropout[adapter]
    p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
    return _LoraBranch.apply(result, x, weight_a, weight_b, float(self.scaling[adapter]), p)


def fuse_lora_layers(model: nn.Module) -> int:
    """Route the forward of every plain LoRA Linear (nn.Linear base, no DoRA) through _LoraBranch, in place.

    Returns how many layers are fused. PEFT's forward stays the class method, which unfuse_lora_layers restores.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear and type(module.base_layer) is nn.Linear and not module.lora_variant:
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    log.info("fused LoRA branch on %d layers", count)
    return count


def unfuse_lora_layers(model: nn.Module) -> None:
    for module in model.modules():
        if "forward" in vars(module) and getattr(module.forward, "__func__", None) is _fused_forward:
            del module.forward
