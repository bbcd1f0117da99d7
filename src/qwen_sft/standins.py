"""Tiny, randomly initialised stand-ins of each model family (families.py), with the real tokenizer, chat template
and config values: what the tests, the benches and the demo train, merge and serve without downloading weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TINY_SIZES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)
# Qwen3-4B initialises embeddings with std 0.02. With tied embeddings and RMS-normed hidden states of
# width 64, that caps every logit near 64 * 0.02 * ... ~ 1, so a tiny model cannot become confident and
# its loss stalls near ln(vocab). A larger embedding scale lets the demo's loss visibly fall.
TINY_EMBED_STD = 0.5


def _scale_embeddings(model, tied: bool) -> None:
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, TINY_EMBED_STD)
        if not tied:  # the same logit scale as the tied stand-in (see TINY_EMBED_STD)
            model.get_output_embeddings().weight.normal_(0.0, TINY_EMBED_STD)


def build_tiny_qwen3(out_dir: str | Path, seed: int = 0, variant: str = "hybrid", tied: bool = True) -> Path:
    """A randomly initialised Qwen3-architecture model (real vocab, tiny sizes) + the real tokenizer.

    variant: hybrid | instruct-2507 | thinking-2507 (the chat template, config values and sampling defaults of
    that checkpoint family: assets.VARIANTS). tied: embeddings shared with the lm_head, as Qwen3-0.6B/1.7B/4B
    (and the 4B-2507 models) ship; False: a separate lm_head, as Qwen3-8B/14B/32B ship."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .assets import qwen3_tokenizer_dir

    out_dir = Path(out_dir)
    ref = qwen3_tokenizer_dir(variant)
    base = json.loads((ref / "config.json").read_text())
    base.update(TINY_SIZES, max_window_layers=TINY_SIZES["num_hidden_layers"], torch_dtype="float32",
                tie_word_embeddings=tied)
    config = AutoConfig.for_model(**base)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _scale_embeddings(model, tied)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(ref / name, out_dir / name)
    return out_dir


# ---------------------------------------------------------------- Qwen3.5

# The real layout at tiny width: 3 Gated DeltaNet layers, then a full-attention one (full_attention_interval 4);
# the published head dims scaled down (head_dim 256 -> 32 keeps the partial rotary factor 0.25 whole: 8 rotary
# dims, mrope sections 2 + 1 + 1), 2 key / 4 value heads in the linear attention (grouped like the 4B's 16 / 32).
QWEN3_5_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=32, linear_key_head_dim=16, linear_value_head_dim=16,
                    linear_num_key_heads=2, linear_num_value_heads=4, max_position_embeddings=4096, dtype="float32")
QWEN3_5_VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, num_position_embeddings=64)
QWEN3_5_SMALL_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                       "preprocessor_config.json", "video_preprocessor_config.json")


def _qwen3_5_config(ref: Path, tied: bool | None, text_only: bool):
    from transformers import AutoConfig

    full = json.loads((ref / "config.json").read_text())
    text = full["text_config"]
    text.update(QWEN3_5_TEXT, layer_types=text["layer_types"][:QWEN3_5_TEXT["num_hidden_layers"]])
    text["rope_parameters"] = dict(text["rope_parameters"], mrope_section=[2, 1, 1])
    if tied is not None:
        text["tie_word_embeddings"] = full["tie_word_embeddings"] = tied
    full["vision_config"].update(QWEN3_5_VISION, out_hidden_size=QWEN3_5_TEXT["hidden_size"])
    if text_only:
        text["architectures"] = ["Qwen3_5ForCausalLM"]
        return AutoConfig.for_model(**text)
    return AutoConfig.for_model(**full)


def _mtp_tensors(text_config, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """What a published checkpoint's multi-token-prediction head holds (names of Qwen3.6-27B's index): one
    full-attention decoder layer, an input projection and its norms. transformers does not load them."""
    h, i, d = text_config.hidden_size, text_config.intermediate_size, text_config.head_dim
    q, kv = text_config.num_attention_heads * d, text_config.num_key_value_heads * d
    shapes = {"fc.weight": (h, 2 * h), "norm.weight": (h,), "pre_fc_norm_embedding.weight": (h,),
              "pre_fc_norm_hidden.weight": (h,), "layers.0.input_layernorm.weight": (h,),
              "layers.0.post_attention_layernorm.weight": (h,), "layers.0.mlp.gate_proj.weight": (i, h),
              "layers.0.mlp.up_proj.weight": (i, h), "layers.0.mlp.down_proj.weight": (h, i),
              "layers.0.self_attn.q_proj.weight": (2 * q, h), "layers.0.self_attn.k_proj.weight": (kv, h),
              "layers.0.self_attn.v_proj.weight": (kv, h), "layers.0.self_attn.o_proj.weight": (h, q),
              "layers.0.self_attn.q_norm.weight": (d,), "layers.0.self_attn.k_norm.weight": (d,)}
    return {f"mtp.{k}": torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}


def _add_to_last_shard(out_dir: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import load_file, save_file

    index_file = out_dir / "model.safetensors.index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        shard = sorted(set(index["weight_map"].values()))[-1]
        index["weight_map"].update({k: shard for k in tensors})
        index["metadata"]["total_size"] += sum(t.numel() * t.element_size() for t in tensors.values())
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    else:
        shard = "model.safetensors"
    merged = load_file(out_dir / shard)
    merged.update(tensors)
    save_file(merged, out_dir / shard, metadata={"format": "pt"})


def build_tiny_qwen3_5(out_dir: str | Path, seed: int = 0, checkpoint: str = "Qwen3.5-4B", tied: bool | None = None,
                       text_only: bool = False, max_shard_size: str | None = None) -> Path:
    """A randomly initialised Qwen3.5-architecture checkpoint shaped like the published ones (real vocabulary,
    tiny sizes) with the real tokenizer, chat template and pre-processor configs of `checkpoint`
    (assets.QWEN3_5_CHECKPOINTS: Qwen3.5-0.8B ... Qwen3.8-27B).

    Saved as `Qwen3_5ForConditionalGeneration` (model.visual.*, model.language_model.*, lm_head unless tied, and
    mtp.* tensors), as the Hub has them; text_only: a `Qwen3_5ForCausalLM` directory (model.*, no vision, no MTP).
    tied: None keeps the checkpoint's own setting (tied up to 4B). max_shard_size: several shards plus an index,
    as published checkpoints come (the MTP tensors go into the last shard)."""
    from transformers import AutoModelForCausalLM, Qwen3_5ForConditionalGeneration

    from .assets import qwen3_5_checkpoint_dir

    out_dir = Path(out_dir)
    ref = qwen3_5_checkpoint_dir(checkpoint)
    config = _qwen3_5_config(ref, tied, text_only)
    text_config = config.get_text_config()
    torch.manual_seed(seed)
    if text_only:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        model = Qwen3_5ForConditionalGeneration._from_config(config, dtype=torch.float32)
    _scale_embeddings(model, text_config.tie_word_embeddings)
    model.save_pretrained(
        out_dir, safe_serialization=True, **({"max_shard_size": max_shard_size} if max_shard_size else {})
    )
    if not text_only:
        _add_to_last_shard(out_dir, _mtp_tensors(text_config, torch.Generator().manual_seed(seed + 1)))
    for name in QWEN3_5_SMALL_FILES:
        if (ref / name).is_file():
            shutil.copyfile(ref / name, out_dir / name)
    if not (ref / "generation_config.json").is_file():  # the small checkpoints ship none: do not invent one
        (out_dir / "generation_config.json").unlink(missing_ok=True)
    return out_dir
