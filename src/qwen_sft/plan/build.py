"""The model `train` would build (load_base_model + wrap_lora), on stand-in tensors: what plan simulates.

The architecture is built on the meta device (arch.py), quantized as bitsandbytes would quantize it (QLoRA:
StandIn4bit), wrapped by the trainer's own `model.wrap_lora`, then given tensors: the frozen weights become
zero-stride views of one zero (counted at full size, holding no memory), the LoRA weights real zeros.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

from .sim import BIG

NF4_BLOCK = 64  # bitsandbytes' 4-bit blocksize: one absmax per 64 weights
NESTED_BLOCK = 256  # double quantization: the absmax values are quantized to 8 bits in blocks of 256


class Params4bit(nn.Parameter):
    """The packed 4-bit weight (two weights a byte). Its class name is what peft's prepare_model_for_kbit_training
    looks for to leave it unconverted."""


class _MatMul4bit(torch.autograd.Function):
    """bitsandbytes' MatMul4Bit as far as memory goes: the weight dequantized to the compute dtype for each product,
    in forward and again in backward; only the packed weight is kept."""

    @staticmethod
    def forward(ctx, x, packed, out_features: int, in_features: int):
        w = packed.new_empty((out_features, in_features), dtype=x.dtype)  # dequantize_4bit's output
        ctx.save_for_backward(packed)
        ctx.shape = (out_features, in_features)
        return torch.nn.functional.linear(x, w)

    @staticmethod
    def backward(ctx, grad):
        (packed,) = ctx.saved_tensors
        w = packed.new_empty(ctx.shape, dtype=grad.dtype)
        return grad @ w, None, None, None


class StandIn4bit(nn.Linear):
    """bitsandbytes' Linear4bit (NF4, double quantization, compute dtype `compute_dtype`) for planning: the same
    packed bytes and quantization state, and its forward's casts (input to the compute dtype, output back)."""

    def __init__(self, in_features: int, out_features: int, compute_dtype: torch.dtype):
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.compute_dtype = in_features, out_features, compute_dtype
        n = in_features * out_features
        blocks = -(-n // NF4_BLOCK)
        self.weight = Params4bit(torch.empty(((n + 1) // 2, 1), dtype=torch.uint8, device="meta"), requires_grad=False)
        self.bias = None
        self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8, device="meta"))
        self.register_buffer("absmax2", torch.empty(-(-blocks // NESTED_BLOCK), dtype=torch.float32, device="meta"))
        self.register_buffer("code", torch.empty(256, dtype=torch.float32, device="meta"))

    def forward(self, x):
        out = _MatMul4bit.apply(x.to(self.compute_dtype), self.weight, self.out_features, self.in_features)
        return out.to(x.dtype)


def quantize_like_bnb(model, compute_dtype: torch.dtype) -> None:
    """Every Linear of the decoder becomes a StandIn4bit, as load_in_4bit does (the lm_head stays as it is)."""
    head = model.get_output_embeddings()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child is not head:
                setattr(parent, name, StandIn4bit(child.in_features, child.out_features, compute_dtype))
    model.is_loaded_in_4bit = True  # what transformers sets; peft's prepare_model_for_kbit_training reads it


def materialize(model) -> int:
    """Give every meta parameter and buffer a tensor; the bytes of the frozen ones and the buffers (full size)."""
    frozen, done = 0, {}
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) not in done:
                if p.requires_grad:  # values only matter to small ops, which run for real: zeros there
                    data = (
                        torch.zeros(p.shape, dtype=p.dtype) if p.numel() < BIG else torch.empty(p.shape, dtype=p.dtype)
                    )
                else:
                    frozen += p.numel() * p.element_size()
                    data = _stand_in(p)
                cls = type(p) if isinstance(p, Params4bit) else nn.Parameter
                done[id(p)] = cls(data, requires_grad=p.requires_grad)
            setattr(module, name, done[id(p)])
        for name, b in list(module.named_buffers(recurse=False)):
            if b is not None and b.device.type == "meta":
                frozen += b.numel() * b.element_size()
                module._buffers[name] = _stand_in(b)
        for name, value in list(vars(module).items()):  # tensors kept as plain attributes (rotary's original_inv_freq)
            if isinstance(value, torch.Tensor) and value.device.type == "meta":
                setattr(module, name, torch.zeros(value.shape, dtype=value.dtype))
    return frozen


def _stand_in(t: torch.Tensor) -> torch.Tensor:
    """A large tensor: a zero-stride view of one zero (no memory); a small one: real zeros (norm weights, inv_freq).
    Zeros keep every value the small ops compute finite."""
    if t.numel() >= BIG:
        return torch.zeros((), dtype=t.dtype).expand(t.shape)
    return torch.zeros(t.shape, dtype=t.dtype)


@contextlib.contextmanager
def quiet():
    """The trainer's INFO lines (LoRA counts, fused layers) and transformers' notes are not the plan's output."""
    loggers = [logging.getLogger(name) for name in ("qwen_sft", "transformers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # (transformers: its one-time notes on the kernels it falls back from)
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def build(arch, cfg, layers: int, dtype: torch.dtype, attn: str):
    """(the PeftModel train would build for cfg with `layers` layers on stand-in tensors, frozen bytes)."""
    from ..layers import attention
    from ..model import wrap_lora

    attention.register()
    with quiet(), torch.device("meta"):  # the LoRA weights too: made on meta, not initialized
        model = arch.build(layers, dtype, attn)
        model.config.use_cache = False
        if cfg.quantization_bit:
            quantize_like_bnb(model, dtype)
        model = wrap_lora(model, cfg)
    return model, materialize(model)
