"""Padding-free batches give the padded batch's loss and LoRA gradients; examples never attend to each other."""

import torch
from transformers import AutoModelForCausalLM

from qwen_sft.batching import collate_padded, collate_padding_free
from qwen_sft.config import TrainConfig
from qwen_sft.data.encode import Encoded
from qwen_sft.loss import CausalLMLoss, full_logits_loss
from qwen_sft.model import wrap_lora
from tests.tiny import tiny_model_dir


def _lora_module():
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), dtype=torch.float32, attn_implementation="sdpa")
    assert model.config.use_cache  # the saved config says True: CausalLMLoss must switch the cache off itself
    cfg = TrainConfig(lora_rank=4, lora_alpha=8, lora_dropout=0.0, gradient_checkpointing=False)
    torch.manual_seed(0)
    model = wrap_lora(model, cfg)
    with torch.no_grad():  # non-zero B so that every LoRA weight gets a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return CausalLMLoss(model, chunk_size=7)


def _rows():
    g = torch.Generator().manual_seed(3)
    rows = []
    for n in (9, 17, 5):
        ids = torch.randint(0, 151_000, (n,), generator=g).tolist()
        labels = [-100] * (n // 2) + ids[n // 2:]
        rows.append(Encoded(ids, labels))
    return rows


def _loss_and_grads(module, batch):
    module.zero_grad()
    loss = module(**batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}


def test_padding_free_equals_padded_loss_and_lora_grads():
    module = _lora_module()
    rows = _rows()
    packed = collate_padding_free(rows)
    padded = collate_padded(rows, pad_id=151643)
    loss_a, grads_a = _loss_and_grads(module, {k: packed[k] for k in ("input_ids", "position_ids", "targets")})
    loss_b, grads_b = _loss_and_grads(module, {k: padded[k] for k in ("input_ids", "attention_mask", "targets")})
    assert torch.allclose(loss_a, loss_b, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-4), name


def test_each_packed_example_matches_its_own_forward():
    """The per-example mask comes from restarting position_ids: logits equal a standalone forward."""
    module = _lora_module()
    rows = _rows()
    for i, row in enumerate(rows):
        packed = collate_padding_free(rows)
        alone = collate_padding_free([row])
        start = sum(len(r.input_ids) for r in rows[:i])
        with torch.no_grad():
            lm = module.causal_lm()
            h_packed = lm.model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).last_hidden_state
            h_alone = lm.model(input_ids=alone["input_ids"], position_ids=alone["position_ids"], use_cache=False).last_hidden_state
        assert torch.allclose(h_packed[0, start:start + len(row.input_ids)], h_alone[0], atol=1e-5)


def test_loss_module_matches_plain_forward_loss():
    """CausalLMLoss (hidden states -> trained positions -> chunked CE) equals model(...).logits + CE."""
    module = _lora_module()
    batch = collate_padded(_rows(), pad_id=151643)
    with torch.no_grad():
        ours = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], targets=batch["targets"])
        logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        ref = full_logits_loss(logits, batch["targets"])
    assert torch.allclose(ours, ref, rtol=1e-5)
