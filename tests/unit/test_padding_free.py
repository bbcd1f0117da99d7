"""Padding-free batches give the padded batch's loss and LoRA gradients; examples never attend to each other."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from qwen_sft.layers import attention

from qwen_sft.batching import collate_padded, collate_padding_free
from qwen_sft.config import TrainConfig
from qwen_sft.data.encode import Encoded
from qwen_sft.loss import CausalLMLoss, full_logits_loss
from qwen_sft.model import wrap_lora
from tests.close import assert_close
from tests.tiny import tiny_model_dir


ATTENTIONS = ("sdpa", attention.NAME)


def _lora_module(attn="sdpa", checkpointing=False, dropout=0.0):
    attention.register()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), dtype=torch.float32, attn_implementation=attn)
    assert model.config.use_cache  # the saved config says True: CausalLMLoss must switch the cache off itself
    cfg = TrainConfig(lora_rank=4, lora_alpha=8, lora_dropout=dropout, gradient_checkpointing=checkpointing)
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


@pytest.mark.parametrize("attn", ATTENTIONS)
def test_padding_free_equals_padded_loss_and_lora_grads(attn):
    module = _lora_module(attn)
    rows = _rows()
    packed = collate_padding_free(rows)
    padded = collate_padded(rows, pad_id=151643)
    loss_a, grads_a = _loss_and_grads(module, {k: packed[k] for k in ("input_ids", "position_ids", "targets")})
    loss_b, grads_b = _loss_and_grads(module, {k: padded[k] for k in ("input_ids", "attention_mask", "targets")})
    assert_close(loss_a, loss_b, "loss")
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    for name in grads_a:
        assert_close(grads_a[name], grads_b[name], name)


@pytest.mark.parametrize("attn", ATTENTIONS)
def test_each_packed_example_matches_its_own_forward(attn):
    """The per-example mask comes from restarting position_ids: logits equal a standalone forward."""
    module = _lora_module(attn)
    rows = _rows()
    for i, row in enumerate(rows):
        packed = collate_padding_free(rows)
        alone = collate_padding_free([row])
        start = sum(len(r.input_ids) for r in rows[:i])
        with torch.no_grad():
            lm = module.causal_lm()
            extra = {}
            if attn == attention.NAME:
                extra["packed_seq_lens"] = attention.packed_seq_lens(packed["position_ids"])
            h_packed = lm.model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False,
                                **extra).last_hidden_state
            h_alone = lm.model(
                input_ids=alone["input_ids"], position_ids=alone["position_ids"], use_cache=False
            ).last_hidden_state
        assert_close(h_packed[0, start:start + len(row.input_ids)], h_alone[0], f"example {i}")


def test_loss_module_matches_plain_forward_loss():
    """CausalLMLoss (hidden states -> trained positions -> chunked CE) equals model(...).logits + CE."""
    module = _lora_module()
    batch = collate_padded(_rows(), pad_id=151643)
    with torch.no_grad():
        ours = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], targets=batch["targets"])
        logits = module.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
        ref = full_logits_loss(logits, batch["targets"])
    assert_close(ours, ref, "loss")


def test_sdpa_packed_runs_one_causal_unmasked_call_per_example(monkeypatch):
    """The padding-free loss goes through per-example is_causal SDPA (flash-eligible), never a dense mask."""
    module = _lora_module(attention.NAME)
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((q.shape[2], attn_mask is None, kw.get("is_causal")))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    rows = _rows()
    batch = collate_padding_free(rows)
    with torch.no_grad():
        module(**{k: batch[k] for k in ("input_ids", "position_ids", "targets")})
    assert calls == [(len(r.input_ids), True, True) for r in rows] * 2  # 2 layers


def test_packed_seq_lens_from_position_ids():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    assert attention.packed_seq_lens(pos) == [3, 2, 1, 4]
    with pytest.raises(ValueError, match="start at position 0"):
        attention.packed_seq_lens(torch.tensor([[1, 2, 0]]))


def test_sdpa_packed_without_lengths_is_plain_sdpa_with_mask():
    """Padded batches and generation (no packed lengths) fall back to sdpa, padding mask included."""
    plain, packed = _lora_module("sdpa"), _lora_module(attention.NAME)
    batch = collate_padded(_rows(), pad_id=151643)
    with torch.no_grad():
        a = plain.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        b = packed.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    assert torch.equal(a, b)


def test_bf16_base_computes_lora_in_bf16_and_keeps_fp32_master_weights():
    """PEFT keeps LoRA weights in fp32 on a bf16 base; CausalLMLoss autocasts so their matmuls run in bf16.
    (PEFT's own forward here; the fused branch: tests/unit/test_fused.py.)"""
    attention.register()
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir(), dtype=torch.bfloat16, attn_implementation=attention.NAME
    )
    cfg = TrainConfig(lora_rank=4, lora_alpha=8, lora_dropout=0.0, gradient_checkpointing=False, fused_lora=False)
    torch.manual_seed(0)
    module = CausalLMLoss(wrap_lora(model, cfg), chunk_size=7)
    assert module.autocast_dtype == torch.bfloat16
    lora_a = next(m for n, m in module.named_modules() if n.endswith("q_proj.lora_A.default"))
    assert lora_a.weight.dtype == torch.float32
    seen, inputs = [], []
    def record(module_, args, output):  # returns None: the output is left alone
        seen.append(output.dtype)
        inputs.append(args[0].dtype)

    lora_a.register_forward_hook(record)
    batch = collate_padding_free(_rows())
    loss = module(**{k: batch[k] for k in ("input_ids", "position_ids", "targets")})
    loss.backward()
    assert seen == [torch.bfloat16]
    assert inputs == [torch.bfloat16]  # PEFT's cast of the adapter input to fp32 is off under autocast
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    lora_layer = next(m for n, m in module.named_modules() if n.endswith("q_proj") and hasattr(m, "lora_A"))
    with pytest.raises(RuntimeError), module.adapter_input_casts_off():
        assert lora_layer.cast_input_dtype_enabled is False
        raise RuntimeError("a failing step")
    assert lora_layer.cast_input_dtype_enabled is True  # restored, also after an error
    module.autocast_dtype = None  # what PEFT alone does: input cast to fp32, the adapter matmul in fp32
    with torch.no_grad():
        module(**{k: batch[k] for k in ("input_ids", "position_ids", "targets")})
    assert seen[-1] == torch.float32 and inputs[-1] == torch.float32
    # A float32 model stays out of autocast.
    assert _lora_module().autocast_dtype is None


def test_packed_forward_builds_no_attention_mask(monkeypatch):
    """The [T x T] mask transformers would build for the packed row is skipped; padded batches still get one."""
    from transformers import masking_utils

    module = _lora_module(attention.NAME)
    built = []
    real = masking_utils.sdpa_mask
    monkeypatch.setattr(masking_utils, "sdpa_mask", lambda *a, **k: built.append(1) or real(*a, **k))
    rows = _rows()
    with torch.no_grad():
        packed = collate_padding_free(rows)
        module(**{k: packed[k] for k in ("input_ids", "position_ids", "targets")})
        assert built == []
        padded = collate_padded(rows, pad_id=151643)
        module(**{k: padded[k] for k in ("input_ids", "attention_mask", "targets")})
    assert built == [1]


def test_sdpa_packed_with_gradient_checkpointing_gives_the_same_grads():
    """Checkpoint recomputation reruns the layers with the same packed lengths (and dropout masks): the gradients
    equal the plain run's up to float32 rounding. The same bound fails on a real difference: another packed
    length, or another dropout mask."""
    batch = collate_padding_free(_rows())
    batch = {k: batch[k] for k in ("input_ids", "position_ids", "targets")}
    plain = _lora_module(attention.NAME, dropout=0.1)
    ckpt = _lora_module(attention.NAME, checkpointing=True, dropout=0.1)
    ckpt.train()
    ckpt.model.load_state_dict(plain.model.state_dict())
    torch.manual_seed(5)
    loss_a, grads_a = _loss_and_grads(plain, batch)
    torch.manual_seed(5)
    loss_b, grads_b = _loss_and_grads(ckpt, batch)
    assert_close(loss_b, loss_a, "loss")
    for name in grads_a:
        assert_close(grads_b[name], grads_a[name], name)

    # A wrong length: the last two examples read as one (positions run on), so they attend to each other.
    merged = dict(batch, position_ids=batch["position_ids"].clone())
    merged["position_ids"][0, 9 + 17:] += 17
    torch.manual_seed(5)
    _, grads_c = _loss_and_grads(ckpt, merged)
    # Another dropout mask: the same run from another seed.
    torch.manual_seed(6)
    _, grads_d = _loss_and_grads(ckpt, batch)
    for perturbed in (grads_c, grads_d):
        with pytest.raises(AssertionError, match="float32 rounding explains at most"):
            for name in grads_a:
                assert_close(perturbed[name], grads_a[name], name)
