"""The trained-position chunked loss equals the full-logits loss, in value and in gradients."""

import pytest
import torch
from torch import nn

from qwen_sft.loss import full_logits_loss, trained_token_loss
from tests.close import assert_close


def _case(seed=0, tokens=37, hidden=16, vocab=101, weight_grad=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(1, tokens, hidden, generator=g, requires_grad=True)
    head = nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=g))
    head.weight.requires_grad_(weight_grad)
    targets = torch.randint(0, vocab, (1, tokens), generator=g)
    targets[0, ::3] = -100  # untrained positions
    return h, head, targets


@pytest.mark.parametrize("chunk", [1, 5, 2048])
@pytest.mark.parametrize("weight_grad", [False, True])
def test_chunked_loss_and_grads_match_full_logits(chunk, weight_grad):
    h, head, targets = _case(weight_grad=weight_grad)
    ref = full_logits_loss(head(h), targets)
    ref.backward()
    ref_h, ref_w = h.grad.clone(), head.weight.grad.clone() if weight_grad else None
    h.grad = None
    head.weight.grad = None

    got = trained_token_loss(h, head, targets, chunk_size=chunk)
    got.backward()
    assert_close(got, ref, "loss")
    assert_close(h.grad, ref_h, "hidden-state gradient")
    if weight_grad:
        assert_close(head.weight.grad, ref_w, "head gradient")
    # Untrained positions get exactly zero gradient.
    assert torch.all(h.grad[0, ::3] == 0)


def test_loss_scales_gradient_by_upstream_factor():
    h, head, targets = _case(seed=1)
    (trained_token_loss(h, head, targets) * 0.25).backward()
    g1 = h.grad.clone()
    h.grad = None
    (full_logits_loss(head(h), targets) * 0.25).backward()
    assert_close(g1, h.grad, "gradient")


def test_head_module_path_for_adapted_heads():
    """A head that is not a plain Linear (e.g. LoRA on lm_head) goes through the module itself."""
    h, head, targets = _case(seed=2)
    wrapped = nn.Sequential(head)
    assert_close(trained_token_loss(h, wrapped, targets, 4), full_logits_loss(head(h), targets), "loss")


def test_no_trained_positions_gives_zero():
    h, head, targets = _case()
    targets.fill_(-100)
    assert float(trained_token_loss(h, head, targets).detach()) == 0.0


def test_no_grad_path_gives_same_loss():
    h, head, targets = _case(seed=4)
    with torch.no_grad():
        assert_close(trained_token_loss(h, head, targets, 5), full_logits_loss(head(h), targets), "loss")
