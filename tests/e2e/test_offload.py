"""offload_activations: what goes to the CPU is the checkpointed layer inputs, and training is unchanged."""

import json

import torch
from transformers import AutoModelForCausalLM

from qwen_sft.layers import attention
from qwen_sft import train as train_mod
from qwen_sft.batching import collate_padding_free
from qwen_sft.config import TrainConfig, build_config
from qwen_sft.data.encode import Encoded
from qwen_sft.loss import CausalLMLoss
from qwen_sft.model import wrap_lora
from tests.e2e.test_train import base_cfg, write_rows
from tests.tiny import tiny_model_dir
import pytest

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not


def _saved_through_outer_hooks(checkpointing: bool) -> list[torch.Size]:
    attention.register()
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir(), dtype=torch.float32, attn_implementation=attention.NAME
    )
    module = CausalLMLoss(
        wrap_lora(model, TrainConfig(lora_rank=4, lora_alpha=8, gradient_checkpointing=checkpointing))
    )
    module.train()
    rows = [Encoded(list(range(100, 140)), [-100] * 20 + list(range(120, 140))),
            Encoded(list(range(200, 230)), [-100] * 10 + list(range(210, 230)))]
    batch = collate_padding_free(rows)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        loss = module(**{k: batch[k] for k in ("input_ids", "position_ids", "targets")})
    loss.backward()
    return saved


def test_with_checkpointing_the_offloaded_tensors_are_the_layer_inputs():
    with_ckpt, without = _saved_through_outer_hooks(True), _saved_through_outer_hooks(False)
    hidden = torch.Size([1, 70, 64])  # one row of 70 tokens, hidden size 64
    assert with_ckpt.count(hidden) >= 2  # each of the 2 layers' inputs (plus the final norm's)
    numel = lambda shapes: sum(s.numel() for s in shapes)  # noqa: E731
    assert numel(with_ckpt) < numel(without) / 10  # not every activation: recomputation stays on the device


def test_training_with_offload_is_identical(tmp_path, monkeypatch):
    write_rows(tmp_path / "data.jsonl", n=8)
    entered = []
    real = torch.autograd.graph.save_on_cpu

    def spy(*a, **k):
        entered.append(1)
        return real(*a, **k)

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", spy)
    histories = {}
    for offload in (False, True):
        cfg = build_config(base_cfg(tmp_path, max_steps=2, gradient_checkpointing=True, offload_activations=offload,
                                    run_name=f"offload-{offload}", dataloader_num_workers=0), "test")
        train_mod.train(cfg)
        history = json.loads((cfg.run_dir / "loss_history.json").read_text())
        histories[offload] = [h["loss"] for h in history if "loss" in h]
    assert len(entered) == 2 * 2  # 2 steps x 2 micro-batches, only in the offload run
    assert histories[True] == histories[False] and len(histories[True]) == 2
