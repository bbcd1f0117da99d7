"""qwen-sft plan (#24): the predicted peak is the peak a real training step allocates, byte for byte, on CPU.

The real step: the trainer's own train_step on a real float32 model (real weights, real arithmetic), counting every
storage an op allocates (plan.sim.LiveBytes). The prediction: the same step on stand-in tensors with the arithmetic
skipped, simulated at 2 and 3 layers and extrapolated to the model's depth (plan.memory.measure).
"""

from __future__ import annotations

import json

import pytest
import torch

from qwen_sft.layers import attention
from qwen_sft.assets import ASSET_DIR
from qwen_sft.batching import Collator, pack_rows
from qwen_sft.config import build_config
from qwen_sft.data.encode import Encoded
from qwen_sft.errors import UserError
from qwen_sft.model import TINY_SIZES, wrap_lora
from qwen_sft.plan import arch as arch_mod
from qwen_sft.plan import build, cards, memory

LAYERS = 4  # extrapolated from 2 and 3
LENGTHS = [96, 70, 50, 33, 20, 90]


def tiny_arch(layers: int = LAYERS, **sizes) -> arch_mod.Arch:
    """The tiny Qwen3 stand-in's sizes with a 4,096-token vocabulary (the embedding and the logits still large
    tensors, the real step's cross-entropy cheap)."""
    config = json.loads((ASSET_DIR / "config.json").read_text())
    config.update(TINY_SIZES, num_hidden_layers=layers, max_window_layers=layers, vocab_size=4096)
    config.update(sizes)
    return arch_mod.Arch("qwen3", "tiny", config, "test")


def micro_batch(cfg, lengths=LENGTHS) -> dict:
    rows = [Encoded([1] * n, [-100] * (n // 3) + [1] * (n - n // 3), source=f"r{i}") for i, n in enumerate(lengths)]
    b = cfg.per_device_train_batch_size
    if cfg.packing:
        return Collator(rows, True, 0, pack_rows(lengths, cfg.cutoff_len))(list(range(b)))
    return Collator(rows, cfg.padding_free, 0)(list(range(b)))


def real_step(arch, cfg, micro: dict):
    """A real float32 training step of the model arch describes: real weights, real arithmetic, counted."""
    from transformers import AutoConfig, AutoModelForCausalLM

    attention.register()
    torch.manual_seed(0)
    hf = AutoConfig.for_model(**{k: v for k, v in arch.config.items() if k != "torch_dtype"})
    model = AutoModelForCausalLM.from_config(hf, dtype=torch.float32, attn_implementation=attention.NAME)
    model.config.use_cache = False
    with build.quiet():
        if arch.row.keep_rows_apart is not None:  # as load_base_model does
            arch.row.keep_rows_apart(model)
        model = wrap_lora(model, cfg)
    # With accumulation, the step's micro-batches run from no gradient, as in training.
    micros = [micro, micro] if cfg.gradient_accumulation_steps > 1 else None
    return memory.run_step(model, memory.frozen_bytes(model), cfg, micro, False, 1, skip=False, micros=micros)


CASES = {
    "defaults": {},
    "micro-batch 3, no accumulation": {"per_device_train_batch_size": 3, "gradient_accumulation_steps": 1},
    "no checkpointing": {"gradient_checkpointing": False},
    "rank 16": {"lora_rank": 16, "lora_alpha": 32},
    "cutoff 48": {"cutoff_len": 48},
    "packing": {"packing": True, "per_device_train_batch_size": 1},
    "padded batch": {"padding_free": False},
    "unfused": {"fused_lora": False, "fused_norm_mlp": False},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_predicted_peak_is_the_real_steps_peak_byte_for_byte(case):
    cfg = build_config({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "cutoff_len": 96,
                        "lora_rank": 8, "lora_alpha": 16, "bf16": False, **CASES[case]})
    arch = tiny_arch()
    lengths = [min(n, cfg.cutoff_len) for n in LENGTHS]
    micro = micro_batch(cfg, lengths)
    predicted = memory.measure(arch, cfg, micro, cuda=False)
    real = real_step(arch, cfg, micro)
    assert predicted.layers == real.layers == LAYERS
    assert predicted.peak.bytes == real.peak.bytes
    assert predicted.peak.parts == real.peaks[real.peak_segment()].parts


@pytest.mark.slow
def test_layer_heavy_model_peaks_in_a_layer_and_is_still_exact():
    """A small vocabulary and wide layers: the peak moves from the loss into a layer's backward, and the extrapolated
    figure is still the real one (with accumulation, the second micro-batch holds the first's gradients)."""
    arch = tiny_arch(vocab_size=512, hidden_size=128, intermediate_size=512, head_dim=32)
    cfg = build_config({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "cutoff_len": 256,
                        "lora_rank": 8, "lora_alpha": 16, "bf16": False})
    micro = micro_batch(cfg, [256, 240])
    predicted = memory.measure(arch, cfg, micro, cuda=False)
    real = real_step(arch, cfg, micro)
    assert predicted.peak_segment()[2][0] in ("first", "low", "high", "last")
    assert predicted.peak.bytes == real.peak.bytes


def test_extrapolation_equals_the_full_simulation_on_a_cuda_target():
    """bf16, the flash-like attention, CUDA dropout and 512-byte blocks: every segment of a 6-layer simulation equals
    the one extrapolated from 2 and 3 layers."""
    arch = tiny_arch(layers=6)
    cfg = build_config({"per_device_train_batch_size": 2, "cutoff_len": 96, "lora_rank": 8, "lora_alpha": 16})
    micro = micro_batch(cfg)
    full = memory.simulate(arch, cfg, micro, True, 6)
    predicted = memory.measure(arch, cfg, micro, True)
    assert {s: (p.bytes, p.parts) for s, p in predicted.peaks.items()} == \
        {s: (p.bytes, p.parts) for s, p in full.peaks.items() if s[2][0] != "mid"}
    assert predicted.peak.bytes == full.peak.bytes and predicted.counts == full.counts


@pytest.mark.slow
def test_qwen35_extrapolation_equals_the_full_simulation():
    """Qwen3.5's pattern (3 DeltaNet layers, then full attention) repeats every 4 layers: 4 repeats simulated whole
    equal 2 and 3 repeats extrapolated, on both targets."""
    config = json.loads((ASSET_DIR.parent / "qwen3_5" / "Qwen3.5-0.8B" / "config.json").read_text())
    family, text = arch_mod.family_of(config)
    text.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
                num_hidden_layers=16, vocab_size=2048)
    arch = arch_mod.Arch(family, "tiny-qwen3.5", text, "test")
    assert arch.period == 4
    cfg = build_config({"per_device_train_batch_size": 2, "cutoff_len": 32, "lora_rank": 8, "lora_alpha": 16})
    micro = micro_batch(cfg, [32, 24])
    for cuda in (True, False):
        full = memory.simulate(arch, cfg, micro, cuda, 16)
        predicted = memory.measure(arch, cfg, micro, cuda)
        assert (predicted.peak.bytes, predicted.peak.parts) == (full.peak.bytes, full.peak.parts), cuda


def tiny_qwen3_5(layers: int) -> arch_mod.Arch:
    config = json.loads((ASSET_DIR.parent / "qwen3_5" / "Qwen3.5-0.8B" / "config.json").read_text())
    family, text = arch_mod.family_of(config)
    text.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
                num_hidden_layers=layers, layer_types=text["layer_types"][:layers], vocab_size=2048)
    return arch_mod.Arch(family, "tiny-qwen3.5", text, "test")


@pytest.mark.slow
def test_qwen3_5_predicted_peak_is_the_real_steps_peak_byte_for_byte():
    """A tiny Qwen3.5 (two repeats of 3 DeltaNet layers + full attention, packed rows kept apart per example) in
    float32: the plan's peak is the peak a real step allocates."""
    arch = tiny_qwen3_5(8)
    cfg = build_config({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "cutoff_len": 96,
                        "lora_rank": 8, "lora_alpha": 16, "bf16": False})
    micro = micro_batch(cfg, [96, 70])
    predicted = memory.measure(arch, cfg, micro, cuda=False)
    real = real_step(arch, cfg, micro)
    assert predicted.peak.bytes == real.peak.bytes
    assert predicted.peak.parts == real.peaks[real.peak_segment()].parts


@pytest.mark.slow
def test_qwen3_5_plans_from_the_bundled_config_through_the_family_table():
    """Qwen3.5-0.8B from the package's config.json alone: the frozen bytes are the family's meta model's parameters
    and buffers, and the LoRA bytes cover every default target, the linear-attention projections included."""
    from transformers import AutoConfig

    from qwen_sft.assets import QWEN3_5_DIR
    from qwen_sft.families import QWEN3_5, meta_model

    arch = arch_mod.resolve("Qwen/Qwen3.5-0.8B")
    assert (arch.row, arch.layers, arch.period) == (QWEN3_5, 24, 4)
    cfg = build_config({"model_name_or_path": "Qwen/Qwen3.5-0.8B", "per_device_train_batch_size": 2,
                        "cutoff_len": 256, "lora_rank": 8, "lora_alpha": 16})
    m = memory.measure(arch, cfg, micro_batch(cfg, [256, 200]), True)
    meta = meta_model(AutoConfig.from_pretrained(QWEN3_5_DIR / "Qwen3.5-0.8B"), dtype=torch.bfloat16)
    params = {id(p): p.numel() * p.element_size() for p in meta.parameters()}
    assert m.frozen == sum(params.values()) + sum(b.numel() * b.element_size() for b in meta.buffers())
    targets = [mod for n, mod in meta.named_modules()
               if isinstance(mod, torch.nn.Linear) and n.rsplit(".", 1)[-1] in QWEN3_5.lora_targets]
    linear_attn = [n for n, _ in meta.named_modules() if n.endswith((".in_proj_qkv", ".in_proj_z", ".out_proj"))]
    assert len(linear_attn) == 18 * 3 and len(targets) == 6 * 4 + 18 * 3 + 24 * 3
    assert m.lora == sum(8 * (mod.in_features + mod.out_features) * 4 for mod in targets)  # fp32 A and B


def test_plan_refuses_an_architecture_without_a_family_row(tmp_path, capsys):
    from qwen_sft.cli import main

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    assert main(["plan", f"model_name_or_path={tmp_path}", "--memory", "24"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model_type 'llama' (LlamaForCausalLM) is not supported; qwen-sft trains Qwen3 dense")
    assert err.count("\n") == 1


def test_simulation_leaves_the_random_stream_as_it_was():
    """train plans before it builds the model: the LoRA init and dropout must draw what they would without it."""
    cfg = build_config({"per_device_train_batch_size": 2, "cutoff_len": 96, "lora_rank": 4, "lora_alpha": 8,
                        "bf16": False})
    torch.manual_seed(5)
    before = torch.get_rng_state()
    memory.simulate(tiny_arch(layers=2), cfg, micro_batch(cfg), False, 2)
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------- architectures and cards


def test_published_configs_resolve_without_weights():
    a = arch_mod.resolve("Qwen/Qwen3-32B")
    assert (a.family, a.layers, a.config["hidden_size"], a.config["intermediate_size"]) == ("qwen3", 64, 5120, 25600)
    assert arch_mod.resolve("Qwen/Qwen3-4B-Instruct-2507").config["num_hidden_layers"] == 36
    b = arch_mod.resolve("Qwen/Qwen3.5-27B")
    assert (b.family, b.layers, b.period, b.config["tie_word_embeddings"]) == ("qwen3_5", 64, 4, False)
    with pytest.raises(UserError, match="no config.json there"):
        arch_mod.resolve("someone/not-a-model")


def test_cards_by_the_names_users_give():
    assert cards.find("RTX 4090").key == cards.find("geforce rtx_4090 24GB").key == "rtx4090"
    assert cards.find("A100 40GB").memory_gib == 40 and cards.find("a100").memory_gib == 80
    assert cards.find("H100 80GB").bf16_tflops == 989.4
    assert cards.find("T4").bf16_tflops is None
    with pytest.raises(UserError, match="--memory GiB"):
        cards.find("h100-40")
