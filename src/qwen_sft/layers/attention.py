"""`sdpa_packed`: per-example causal SDPA for padding-free rows, plain SDPA otherwise.

A padding-free micro-batch is one row holding several examples. With transformers' `sdpa`, the
model turns the restarting position_ids into a dense [T x T] block-diagonal mask; a masked SDPA call
cannot use the flash kernel and computes every one of the T^2 scores, about 2 x n_examples times the
work of the causal blocks it keeps. Here the row is split at the example boundaries and each piece goes
through SDPA with is_causal=True: the same result, the flash kernel on CUDA, no mask. This is what
flash-attention's varlen kernel does, without the extra package.

The example lengths arrive as the `packed_seq_lens` keyword (a Python list: no device sync per layer);
`CausalLMLoss` derives them from position_ids once per forward and runs that forward inside
`packed_forward()`, during which the mask builder returns None instead of a [T x T] mask nobody reads.
Any call without the lengths (a padded batch, evaluation with a mask, generation with a KV cache) is
plain `sdpa`, mask included.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F

NAME = "sdpa_packed"
_PACKED = contextvars.ContextVar("qwen_sft_packed_forward", default=False)


def sdpa_packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          packed_seq_lens: list[int] | None = None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_seq_lens is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kwargs.get("sliding_window") is not None:
        raise ValueError("sdpa_packed does not implement sliding-window attention; use attn_implementation: sdpa")
    if sum(packed_seq_lens) != query.shape[2]:
        raise ValueError(f"packed_seq_lens add up to {sum(packed_seq_lens)}, but the row has {query.shape[2]} tokens")
    # query [1, Hq, T, D], key/value [1, Hkv, T, D]; the output is [1, T, Hq, D] like the other backends.
    # torch.split: one backward node per tensor (slicing would add a full-size zero gradient per example).
    gqa = query.shape[1] != key.shape[1]
    outs = [F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
            for q, k, v in zip(*(t.split(packed_seq_lens, dim=2) for t in (query, key, value)))]
    if len(outs) == 1:
        return outs[0].transpose(1, 2).contiguous(), None
    return torch.cat([o.transpose(1, 2) for o in outs], dim=1), None  # one copy, straight into [1, T, Hq, D]


def _mask(*args, **kwargs):
    from transformers import masking_utils

    return None if _PACKED.get() else masking_utils.sdpa_mask(*args, **kwargs)


@contextlib.contextmanager
def packed_forward():
    """Around a forward whose attention gets packed_seq_lens: no attention mask is built."""
    token = _PACKED.set(True)
    try:
        yield
    finally:
        _PACKED.reset(token)


def register() -> None:
    """Make `attn_implementation="sdpa_packed"` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, sdpa_packed_attention)
    # sdpa's masks for the calls that fall back to sdpa (padding, KV-cache generation).
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _mask)


def packed_seq_lens(position_ids: torch.Tensor) -> list[int]:
    """Example lengths of a one-row padding-free batch: each example's positions start at 0."""
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()  # a device sync, once per forward
    if not starts or starts[0] != 0:
        raise ValueError("a padding-free row must start at position 0")
    return [b - a for a, b in zip(starts, starts[1:] + [position_ids.shape[1]])]
