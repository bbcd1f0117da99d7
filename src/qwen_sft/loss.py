"""Cross-entropy computed only at trained positions, in chunks, without materializing [tokens x vocab].

Qwen3's vocabulary is 151,936 tokens: at 2 x 4096 tokens the full fp32 logits alone take 5 GB, and
autograd would keep them (and a copy for the gradient). Here the lm_head is applied only to hidden
states whose target is trained, a chunk at a time, and the gradient of each chunk is computed in the
forward pass (softmax - onehot) so no chunk's logits outlive its loop iteration.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .layers import attention
from .data.encode import IGNORE_INDEX


class _ChunkedLinearCE(torch.autograd.Function):
    """sum_i CE(h_i @ W^T, t_i), with grads for h (and W when it requires grad)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        for lo in range(0, hidden.shape[0], chunk_size):
            h, t = hidden[lo:lo + chunk_size], targets[lo:lo + chunk_size]
            rows = torch.arange(len(t), device=t.device)
            # One [chunk x vocab] fp32 buffer, worked in place: logits -> shifted -> exp -> softmax.
            # (torch.logsumexp would allocate a second buffer of the same size.)
            logits = (h @ weight.T).float()
            logits.sub_(logits.amax(dim=-1, keepdim=True))
            target_logit = logits[rows, t]
            sum_exp = logits.exp_().sum(dim=-1)
            total += (sum_exp.log() - target_logit).sum()
            # d(sum CE)/d logits = softmax - onehot
            grad_logits = logits.div_(sum_exp[:, None])
            grad_logits[rows, t] -= 1
            grad_logits = grad_logits.to(h.dtype)
            grad_h[lo:lo + chunk_size] = grad_logits @ weight
            if grad_w is not None:
                grad_w += (grad_logits.T @ h).float()
            # Freed before the next chunk allocates its own: else two chunks' buffers are alive at once.
            del logits, grad_logits
        ctx.save_for_backward(grad_h, grad_w if grad_w is not None else torch.empty(0))
        ctx.has_grad_w = grad_w is not None
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gw = (grad_w * grad_out).to(grad_h.dtype) if ctx.has_grad_w else None
        return grad_h * grad_out.to(grad_h.dtype), gw, None, None


def trained_token_loss(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk_size: int = 512
) -> torch.Tensor:
    """Sum (not mean) of cross-entropy over positions whose target is not -100.

    hidden: [..., H] final hidden states; targets: [...] already shifted (see batching.py).
    Returns a float32 scalar; the caller divides by the number of trained tokens of the whole step.
    """
    keep = targets != IGNORE_INDEX
    h, t = hidden[keep], targets[keep]
    plain_linear = isinstance(head, nn.Linear) and head.bias is None
    if plain_linear and torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad):
        return _ChunkedLinearCE.apply(h, head.weight, t, chunk_size)
    # Evaluation (no gradient), or a head with an adapter on it (e.g. LoRA on lm_head): plain chunks.
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for lo in range(0, h.shape[0], chunk_size):
        total = total + F.cross_entropy(head(h[lo:lo + chunk_size]).float(), t[lo:lo + chunk_size], reduction="sum")
    return total


def full_logits_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference: sum of cross-entropy from full [.., vocab] logits (what a plain Trainer does)."""
    return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


class CausalLMLoss(nn.Module):
    """Wraps the (PEFT) causal LM: forward(batch) -> summed loss over trained tokens.

    The decoder runs without its lm_head; the head is applied by trained_token_loss. Wrapping the
    whole computation in one module lets DDP / FSDP see it as one forward.
    """

    def __init__(self, model: nn.Module, chunk_size: int = 512):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        # A bf16 base model gets fp32 LoRA weights from PEFT (for exact optimizer updates); without autocast
        # PEFT then runs every adapter matmul in fp32, several times slower than bf16 on a GPU. Autocast
        # keeps the fp32 master weights and computes in bf16, as a mixed-precision Trainer run does.
        self.autocast_dtype = torch.bfloat16 if self.causal_lm().dtype == torch.bfloat16 else None
        self.skip_adapter_input_casts = True  # see adapter_input_casts_off
        # Layers that carry a state along the sequence need the example lengths of a padding-free row as much as
        # sdpa_packed does (layers/recurrent.py); a model that has them without the reset must not train on packed rows.
        from .families import family_of
        from .layers.recurrent import rows_kept_apart

        stateful = family_of(self.causal_lm().config).stateful_layers
        self.stateful = bool(stateful) and any(type(m).__name__ in stateful for m in model.modules())
        self.rows_kept_apart = rows_kept_apart(model)

    def causal_lm(self) -> nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward(self, input_ids, targets, position_ids=None, attention_mask=None):
        with torch.autocast(input_ids.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None), self.adapter_input_casts_off():
            return self._forward(input_ids, targets, position_ids, attention_mask)

    def adapter_input_casts_off(self):
        """Under autocast, PEFT's cast of each adapter input to the fp32 weight dtype is wasted work and memory
        (autocast casts it straight back to bf16); measured on an H200: 1.12x step speed, -0.56 GiB peak.
        The training loop holds this over forward and backward, so checkpoint recomputation skips it too;
        outside it (generation without autocast) PEFT casts as usual."""
        if self.autocast_dtype is None or not self.skip_adapter_input_casts:
            return nullcontext()
        from peft.helpers import disable_input_dtype_casting

        return disable_input_dtype_casting(self.model)

    def _forward(self, input_ids, targets, position_ids, attention_mask):
        lm = self.causal_lm()
        extra, packed = {}, nullcontext()
        padding_free = attention_mask is None and position_ids is not None and input_ids.shape[0] == 1
        sdpa_packed = (lm.config._attn_implementation == attention.NAME
                       and not getattr(lm.config, "use_sliding_window", False))
        if padding_free and (sdpa_packed or self.stateful):
            extra["packed_seq_lens"] = attention.packed_seq_lens(position_ids)
            if sdpa_packed:
                packed = attention.packed_forward()
            if self.stateful and len(extra["packed_seq_lens"]) > 1 and not self.rows_kept_apart:
                raise ValueError("a padding-free row of several examples through layers that carry state along the "
                                 "sequence, without recurrent.keep_rows_apart: the examples would see each other")
        with packed:
            out = lm.model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                           use_cache=False, **extra)
        return trained_token_loss(out.last_hidden_state, lm.lm_head, targets, self.chunk_size)
