"""`sdpa_packed`: per-example causal SDPA for padding-free rows, plain SDPA otherwise.

A padding-free micro-batch is one row holding several examples. With transformers' `sdpa`, the
model turns the restarting position_ids into a dense [T x T] block-diagonal mask; a masked SDPA call
cannot use the flash kernel and computes every one of the T^2 scores, about 2 x n_examples times the
work of the causal blocks it keeps. Here the row is cut at the example boundaries and each piece goes
through SDPA with is_causal=True: the same result, the flash kernel on CUDA, no mask. This is what
flash-attention's varlen kernel does, without the extra package.

The example lengths arrive as the `packed_seq_lens` keyword (a Python list, so no device sync per
layer); `CausalLMLoss` derives them from position_ids once per forward. Any call without them (a
padded batch, evaluation with a mask, generation with a KV cache) is plain `sdpa`, mask included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "sdpa_packed"


def sdpa_packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          packed_seq_lens: list[int] | None = None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_seq_lens is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # query [1, Hq, T, D], key/value [1, Hkv, T, D]; the output is [1, T, Hq, D] like the other backends.
    groups = query.shape[1] // key.shape[1]
    outs, lo = [], 0
    for n in packed_seq_lens:
        outs.append(F.scaled_dot_product_attention(
            query[:, :, lo:lo + n], key[:, :, lo:lo + n], value[:, :, lo:lo + n], dropout_p=dropout,
            is_causal=True, scale=scaling, enable_gqa=groups > 1))
        lo += n
    if lo != query.shape[2]:
        raise ValueError(f"packed_seq_lens add up to {lo}, but the row has {query.shape[2]} tokens")
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `attn_implementation="sdpa_packed"` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, sdpa_packed_attention)
    # The same masks as sdpa, for the calls that fall back to it (padding, KV-cache generation).
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def packed_seq_lens(position_ids: torch.Tensor) -> list[int]:
    """Example lengths of a one-row padding-free batch: each example's positions start at 0."""
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()  # the one device sync per forward
    if not starts or starts[0] != 0:
        raise ValueError("a padding-free row must start at position 0")
    return [b - a for a, b in zip(starts, starts[1:] + [position_ids.shape[1]])]
