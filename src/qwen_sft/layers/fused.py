"""Autograd functions for the LoRA training step that keep less for backward than autograd would.

Each has the math of the code it replaces (tests/unit/test_fused.py); they patch the forward of module
instances, so the weights, what PEFT saves and what merge reads are untouched:
- fuse_lora_layers (config `fused_lora`): a PEFT LoRA Linear as one function;
- fuse_norm_mlp (config `fused_norm_mlp`): the RMSNorm and the SwiGLU product of the MLP (with the down
  projection, when that is a fused LoRA Linear) of the families whose modules have that math (families.py).

LoRA Linear. PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: the multiply and the add
each read and write a full [tokens x out] tensor, in the forward and again in every checkpoint
recomputation; autograd keeps the dropped-out copy of x and its mask for every adapted projection (q, k
and v each keep their own copy of the same input), and in backward it allocates a third full-size
tensor to add the base layer's gradient for x to the adapter's. Here:
- forward: the frozen base matmul, the dropout (in chunks of rows), h = dropout(x) @ A^T (rank-wide),
  and `out.addmm_(h, B^T, alpha=scaling)` adds the scaled branch inside a matrix product, in place;
- saved for backward: x (one tensor shared by the projections that read it), the small h, and the RNG
  state before the dropout, from which the backward regenerates the same masks;
- backward: the adapter's gradient for x is added into the base layer's, in place.
Results, dropout masks and the global RNG stream are PEFT's. Calls it does not cover (no gradient,
several or disabled adapters, DoRA, quantized or non-Linear or trainable base layers, dtypes that do not
line up) go through PEFT's own forward.
"""

from __future__ import annotations

import contextlib
import logging
import types

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("qwen_sft")


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


@contextlib.contextmanager
def _replayed_rng(device: torch.device, state: torch.Tensor | None):
    """Inside: the RNG at `state` (where the forward's dropout started), so the same kernels on the same
    chunks draw the same masks. After: the caller's RNG stream as it was, so training draws exactly what it
    would without these functions. state None (no dropout): nothing to replay."""
    if state is None:
        yield
        return
    now = _rng_state(device)
    _set_rng_state(device, state)
    try:
        yield
    finally:
        _set_rng_state(device, now)


# Elements per dropout call: bounds the dropout output and mask alive at once (at 8192 tokens x 9728,
# down_proj's input, one call holds 220 MiB of them; a chunk of 2^24 elements, 1724 rows there, 48 MiB).
# Inputs up to this size (half of it in _SwiGLUDown) are one call, the very one nn.Dropout makes, so they get
# PEFT's exact masks.
DROPOUT_CHUNK = 1 << 24


def _dropout_rows(width: int) -> int:
    return max(1, DROPOUT_CHUNK // width)


def _mlp_rows(width: int) -> int:
    """Rows per chunk of _SwiGLUDown: half of _dropout_rows, as its backward holds four temporaries a chunk."""
    return max(1, DROPOUT_CHUNK // 2 // width)


def _adapter_h(x2: torch.Tensor, a: torch.Tensor, p: float, rows: int):
    """(dropout_p(x2) @ A^T, the RNG state the dropout started from, or None without dropout)."""
    if p == 0:
        return x2 @ a.T, None
    rng = _rng_state(x2.device)
    # the kernel nn.Dropout runs, `rows` rows at a time; the masks are not kept
    return torch.cat([torch.native_dropout(xc, p, True)[0] @ a.T for xc in x2.split(rows)]), rng


class _LoraLinear(torch.autograd.Function):
    """x @ W^T (+ bias) + scaling * dropout_p(x) @ A^T @ B^T with W (and bias) frozen; matmuls in x's dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, weight_a, weight_b, scaling: float, p: float):
        dtype = x.dtype
        x2 = x.reshape(-1, x.shape[-1])
        a, b = weight_a.to(dtype), weight_b.to(dtype)  # under autocast: bf16 copies of the small fp32 weights
        h, rng = _adapter_h(x2, a, p, _dropout_rows(x2.shape[1]))
        out = F.linear(x2, weight, bias)
        out.addmm_(h, b.T, alpha=scaling)
        ctx.save_for_backward(x, h, weight, weight_a, weight_b)
        ctx.scaling, ctx.p, ctx.rng = scaling, p, rng
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x, h, weight, weight_a, weight_b = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])
        a, b = weight_a.to(g.dtype), weight_b.to(g.dtype)
        x2 = x.reshape(-1, x.shape[-1])
        gh = (g @ b) * ctx.scaling  # [N, r]
        grad_b = (g.T @ h) * ctx.scaling if ctx.needs_input_grad[4] else None
        grad_x = grad_x2 = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
            grad_x2 = torch.mm(g, weight, out=grad_x.view(-1, x.shape[-1]))  # the base layer's part
        if ctx.p == 0:
            grad_a = gh.T @ x2 if ctx.needs_input_grad[3] else None
            if grad_x2 is not None:
                grad_x2.addmm_(gh, a)
        else:
            grad_a = torch.zeros_like(weight_a, dtype=torch.float32) if ctx.needs_input_grad[3] else None
            gh_scaled = gh * (1.0 / (1.0 - ctx.p))  # dropout's backward: times mask / (1 - p)
            rows = _dropout_rows(x2.shape[1])
            with _replayed_rng(x.device, ctx.rng):  # the forward's masks again
                for lo in range(0, x2.shape[0], rows):
                    hi = lo + rows
                    xd, mask = torch.native_dropout(x2[lo:hi], ctx.p, True)
                    if grad_a is not None:
                        grad_a += gh[lo:hi].T @ xd
                    del xd
                    if grad_x2 is not None:
                        grad_x2[lo:hi] += (gh_scaled[lo:hi] @ a).mul_(mask)
                    del mask  # before the next chunk's dropout allocates its own
        return (grad_x, None, None,
                None if grad_a is None else grad_a.to(weight_a.dtype),
                None if grad_b is None else grad_b.to(weight_b.dtype), None, None)


def _lora_args(layer, x: torch.Tensor) -> tuple | None:
    """(weight, bias, weight_a, weight_b, scaling, p) when the fused LoRA Linear `layer` can run as one function
    on x (of x's dtype); None when PEFT's own forward must (see the module docstring)."""
    if getattr(layer.forward, "__func__", None) is not _fused_forward:
        return None
    adapter = layer.active_adapters[0] if len(layer.active_adapters) == 1 else None
    if (adapter is None or not torch.is_grad_enabled() or layer.disable_adapters or layer.merged
            or adapter not in layer.lora_A or adapter in layer.lora_variant or layer.lora_B[adapter].bias is not None):
        return None
    base = layer.base_layer
    weight_a, weight_b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    device_type = x.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight_a.dtype
    if (x.dtype != dtype or base.weight.dtype != dtype or base.weight.requires_grad
            or (base.bias is not None and (base.bias.requires_grad or base.bias.dtype != dtype))):
        return None  # rare: e.g. fp32 activations under bf16 autocast
    dropout = layer.lora_dropout[adapter]
    p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
    return base.weight, base.bias, weight_a, weight_b, float(layer.scaling[adapter]), p


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    lora = None if (args or kwargs) else _lora_args(self, x)
    if lora is None:
        return type(self).forward(self, x, *args, **kwargs)
    return _LoraLinear.apply(x, *lora)


def fuse_lora_layers(model: nn.Module) -> int:
    """Route the forward of every plain LoRA Linear (nn.Linear base, no DoRA) through _LoraLinear, in place.

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


def _restore_forward(model: nn.Module, patched: tuple) -> None:
    """The class's own forward again wherever one of the `patched` functions was put in its place."""
    for module in model.modules():
        if getattr(vars(module).get("forward"), "__func__", None) in patched:
            del module.forward


def unfuse_lora_layers(model: nn.Module) -> None:
    _restore_forward(model, (_fused_forward,))


# ---------------------------------------------------------------- RMSNorm and SwiGLU


class _RMSNorm(torch.autograd.Function):
    """Qwen3RMSNorm's forward, op for op (same rounding). Autograd would keep an fp32 copy of x (4 bytes an
    element); this keeps x itself (often the checkpointed layer input, alive anyway) and the [.., 1] rstd."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rstd = ctx.saved_tensors
        xhat = x.float() * rstd
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_out * xhat.to(x.dtype)).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        gx = (grad_out * weight).float()
        # d/dx [x * rsqrt(mean(x^2) + eps)] applied to gx
        grad_x = rstd * (gx - xhat * (gx * xhat).mean(-1, keepdim=True))
        return grad_x.to(x.dtype), grad_weight, None


class _RMSNormOnePlus(torch.autograd.Function):
    """Qwen3_5RMSNorm's forward, op for op: (x_hat * (1 + weight)) in fp32, then x's dtype (its weight is stored
    zero-centred). Keeps x and the [.., 1] rstd, not autograd's fp32 copies of x and x_hat."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (xf * rstd * (1.0 + weight.float())).type_as(x)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rstd = ctx.saved_tensors
        xhat = x.float() * rstd
        g = grad_out.float()
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (g * xhat).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        gx = g * (1.0 + weight.float())
        grad_x = rstd * (gx - xhat * (gx * xhat).mean(-1, keepdim=True))
        return grad_x.to(x.dtype), grad_weight, None


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up. Autograd would keep gate, up and silu(gate); this keeps gate and up, recomputes
    silu(gate) in backward, and writes gate's gradient over up, which nothing reads after this backward
    (up is the up projection's output, kept by this function alone)."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad_out):
        gate, up = ctx.saved_tensors
        grad_up = F.silu(gate).mul_(grad_out)
        grad_gate = up.mul_(grad_out)  # d/d(silu(gate)), then through silu, in place
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        return grad_gate, grad_up


class _SwiGLUDown(torch.autograd.Function):
    """down(silu(gate) * up) with a fused LoRA down projection. Keeps gate and up, not their product (which
    autograd, or _SwiGLU + _LoraLinear, would keep too); the backward recomputes the product a chunk of rows
    at a time (with the same dropout chunks as the forward) and writes gate's gradient over up and up's
    over the product's gradient: three [tokens x intermediate] tensors alive at most, not four."""

    @staticmethod
    def forward(ctx, gate, up, weight, bias, weight_a, weight_b, scaling: float, p: float):
        prod = F.silu(gate).mul_(up)
        x2 = prod.reshape(-1, prod.shape[-1])
        a, b = weight_a.to(prod.dtype), weight_b.to(prod.dtype)
        h, rng = _adapter_h(x2, a, p, _mlp_rows(x2.shape[1]))
        out = F.linear(x2, weight, bias)
        out.addmm_(h, b.T, alpha=scaling)
        ctx.save_for_backward(gate, up, h, weight, weight_a, weight_b)
        ctx.scaling, ctx.p, ctx.rng = scaling, p, rng
        return out.view(*gate.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        gate, up, h, weight, weight_a, weight_b = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])
        a, b = weight_a.to(g.dtype), weight_b.to(g.dtype)
        gate2, up2 = gate.view(-1, gate.shape[-1]), up.view(-1, up.shape[-1])
        gh = (g @ b) * ctx.scaling
        grad_b = (g.T @ h) * ctx.scaling
        grad_a = torch.zeros_like(weight_a, dtype=torch.float32)
        grad_prod = torch.empty(up.shape, dtype=up.dtype, device=up.device)
        grad_prod2 = torch.mm(g, weight, out=grad_prod.view(-1, up.shape[-1]))  # the base layer's part
        gh_scaled = gh * (1.0 / (1.0 - ctx.p)) if ctx.p > 0 else None
        rows = _mlp_rows(gate2.shape[1])
        with _replayed_rng(gate.device, ctx.rng):  # the forward's masks again (same chunks); no-op without dropout
            for lo in range(0, gate2.shape[0], rows):
                # Each chunk's temporaries are deleted as soon as they are used: at 2^23 elements a chunk, each
                # one left alive into the next chunk's dropout would be 16 MiB more at the step's peak.
                rs = slice(lo, lo + rows)
                act = F.silu(gate2[rs])
                prod = act * up2[rs]  # the forward's product, bit for bit
                gp = grad_prod2[rs]
                if ctx.p > 0:
                    xd, mask = torch.native_dropout(prod, ctx.p, True)
                    del prod
                    grad_a += gh[rs].T @ xd
                    del xd
                    gp += (gh_scaled[rs] @ a).mul_(mask)
                    del mask
                else:
                    grad_a += gh[rs].T @ prod
                    del prod
                    gp.addmm_(gh[rs], a)
                # SwiGLU's backward for these rows, in place: up <- d/d gate, grad_prod <- d/d up
                d_gate = gp * up2[rs]
                torch.ops.aten.silu_backward.grad_input(d_gate, gate2[rs], grad_input=d_gate)
                gp.mul_(act)
                del act
                up2[rs].copy_(d_gate)
                del d_gate
        return up, grad_prod, None, None, grad_a.to(weight_a.dtype), grad_b.to(weight_b.dtype), None, None


def _rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return type(self).forward(self, hidden_states)
    return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)


def _rms_norm_one_plus_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return type(self).forward(self, hidden_states)
    return _RMSNormOnePlus.apply(hidden_states, self.weight, self.eps)


# RMSNorm math per families.Family.norm_kind: "weight" scales by the weight, "one_plus_weight" by 1 + weight
NORM_FORWARDS = {"weight": _rms_norm_forward, "one_plus_weight": _rms_norm_one_plus_forward}


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return type(self).forward(self, x)
    gate, up = self.gate_proj(x), self.up_proj(x)
    lora = _lora_args(self.down_proj, gate)  # the product has gate's dtype
    if lora is None or not (gate.is_contiguous() and up.is_contiguous()):  # _SwiGLUDown writes through views
        return self.down_proj(_SwiGLU.apply(gate, up))
    return _SwiGLUDown.apply(gate, up, *lora)


def fuse_norm_mlp(model: nn.Module, rms_norm: bool = True) -> int:
    """Route the (silu) MLP modules, and the RMSNorm ones unless rms_norm is false (liger-kernel's are in use), of
    the classes that families.py lists as having this math (Family.mlp_class, Family.norm_class) through these
    functions, in place; returns how many modules."""
    from ..families import FAMILIES

    norms = {f.norm_class: NORM_FORWARDS[f.norm_kind] for f in FAMILIES if f.norm_class} if rms_norm else {}
    mlps = {f.mlp_class for f in FAMILIES if f.mlp_class}
    n_norm = n_mlp = 0
    for module in model.modules():
        name = type(module).__name__
        if name in norms:
            module.forward = types.MethodType(norms[name], module)
            n_norm += 1
        elif name in mlps and getattr(module.config, "hidden_act", None) == "silu":
            module.forward = types.MethodType(_mlp_forward, module)
            n_mlp += 1
    log.info("memory-light RMSNorm on %d modules, MLP on %d", n_norm, n_mlp)
    return n_norm + n_mlp


def unfuse_norm_mlp(model: nn.Module) -> None:
    _restore_forward(model, (*NORM_FORWARDS.values(), _mlp_forward))
