"""Each Qwen3 checkpoint family end to end on its tiny stand-in: hybrid with untied embeddings (the 8B/14B/32B
shape), Instruct-2507 and Thinking-2507 (their chat templates): train, record the template kind and the mode
trained, merge, validate the merge, and serve the prompt the model was trained on."""

import json

import pytest
import torch
import yaml

from qwen_sft.config import build_config
from qwen_sft.data.encode import IGNORE_INDEX
from qwen_sft.errors import UserError
from qwen_sft.generate import generate_reply, load_for_chat
from qwen_sft.merge import merge, validate
from qwen_sft.train import train
from tests.tiny import tiny_model_dir

pytestmark = pytest.mark.slow  # training runs, processes or a browser: the whole suite runs it, the quick tier does not

ROWS = [{"instruction": f"Name fact number {i}.", "output": f"<think>\nFact {i} is easy.\n</think>\n\nFact {i} is "
                                                            f"{i * 7}."}
        for i in range(8)]


def _cfg(tmp_path, variant, tied=True, **over):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = {"model_name_or_path": str(tiny_model_dir(variant, tied)), "dataset": str(data), "lora_rank": 4,
           "lora_alpha": 8, "lora_dropout": 0.0, "learning_rate": 5e-3, "per_device_train_batch_size": 4,
           "gradient_accumulation_steps": 1, "max_steps": 4, "warmup_ratio": 0.0, "bf16": False,
           "gradient_checkpointing": False, "cutoff_len": 128, "output_dir": str(tmp_path / "out"),
           "run_name": "run", "logging_steps": 2, "save_steps": 4, "report_to": "none"}
    return build_config({**cfg, **over})


@pytest.mark.parametrize("variant,tied,kind,thinking", [
    ("hybrid", False, "hybrid", False), ("instruct-2507", True, "instruct", False),
    ("thinking-2507", True, "thinking", True)], ids=["hybrid-untied", "instruct-2507", "thinking-2507"])
def test_train_merge_validate_serve(tmp_path, variant, tied, kind, thinking):
    cfg = _cfg(tmp_path, variant, tied)
    assert cfg.enable_thinking == "auto"
    train(cfg)
    run = cfg.run_dir
    meta = json.loads((run / "lora_adapters" / "qwen_sft.json").read_text())
    assert (meta["template_kind"], meta["enable_thinking"]) == (kind, thinking)
    assert yaml.safe_load((run / "config.yaml").read_text())["enable_thinking"] is thinking  # the mode trained
    report = json.loads((run / "data_report.json").read_text())
    assert report["thinking_rows"] == (8 if thinking else 0)
    assert report["reasoning_dropped_rows"] == (0 if thinking else 8)

    merged = merge(None, run / "lora_adapters", tmp_path / "merged", dtype="float32")
    assert json.loads((merged / "qwen_sft.json").read_text())["template_kind"] == kind
    from safetensors import safe_open

    with safe_open(merged / "model.safetensors", "pt") as f:
        assert ("lm_head.weight" in f.keys()) is not tied  # untied: the head is its own tensor, tied: shared
    assert validate(None, run / "lora_adapters", merged, ["Name fact number 3."], dtype="float32", verbose=False).ok

    model, tok, served = load_for_chat(merged)
    assert served is thinking
    # the family's own sampling defaults (generation_config.json), as chat and eval use them
    want = {"hybrid": (0.6, 0.95, 20), "instruct": (0.7, 0.8, 20), "thinking": (0.6, 0.95, 20)}[kind]
    gen = model.generation_config
    assert (gen.temperature, gen.top_p, gen.top_k) == want
    reply = generate_reply(model, tok, [{"role": "user", "content": "Name fact number 3."}], 8, served, greedy=True)
    # Thinking-2507's served prompt ends inside the think block: the reply text starts with its opener.
    assert reply.text.startswith("<think>") is (kind == "thinking")
    from qwen_sft.data.formats import parse_row
    from qwen_sft.evaluation.passes import generate_greedy

    g = generate_greedy(model, tok, parse_row(ROWS[3], None), served, 8)
    assert g.text.startswith("<think>") is (kind == "thinking")


def test_thinking_model_trained_without_thinking_is_refused_before_training(tmp_path):
    cfg = _cfg(tmp_path, "thinking-2507", enable_thinking=False)
    with pytest.raises(UserError, match=r"enable_thinking: false, but .* always-thinking \(Thinking-2507 kind"):
        train(cfg)
    assert not (cfg.run_dir / "lora_adapters").exists() and not list(cfg.run_dir.glob("checkpoint-*"))


def test_thinking_2507_masks_follow_its_served_prompt_in_training(tmp_path):
    from qwen_sft.data.dataset import encode_and_split
    from qwen_sft.data.tokenizer import load_tokenizer

    cfg = _cfg(tmp_path, "thinking-2507", enable_thinking=True)
    tok = load_tokenizer(cfg.model_name_or_path)
    row = encode_and_split(cfg, tok, log=None).train[0]
    ids, labels = row.input_ids.tolist(), row.labels.tolist()
    first = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name fact number 0."}], add_generation_prompt=True)
    assert ids[:first] == list(prompt["input_ids"])
    assert tok.decode(ids[first:]).startswith("Fact 0 is easy.\n</think>\n\nFact 0 is 0.<|im_end|>")


# ---------------------------------------------------------------- Qwen3.5 (3.6, 3.8): checkpoints as published


def _tensors(model_dir):
    """{name: (dtype, raw bytes)} of every tensor of a safetensors checkpoint directory."""
    from safetensors import safe_open

    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            for k in h.keys():
                t = h.get_tensor(k)
                out[k] = (t.dtype, t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return out


@pytest.mark.parametrize("text_only", [False, True], ids=["conditional-generation", "causal-lm"])
def test_qwen3_5_checkpoint_train_merge_validate_chat(tmp_path, text_only):
    """A tiny checkpoint shaped like the published ones (Qwen3_5ForConditionalGeneration: vision tower, MTP head,
    sharded), or a text-only Qwen3_5ForCausalLM save: packed training reaches every layer type, the merge keeps
    the checkpoint whole (its class, config, files; every tensor the adapter does not touch byte for byte) and
    matches base + adapter, and chat serves it."""
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen3_5ForConditionalGeneration

    from qwen_sft.standins import build_tiny_qwen3_5

    base = build_tiny_qwen3_5(tmp_path / "base", seed=0, text_only=text_only,
                              max_shard_size=None if text_only else "20MB")
    # enable_thinking explicit: which mode `auto` picks on the Qwen3.5 think template is the template reader's
    cfg = _cfg(tmp_path, "hybrid", model_name_or_path=str(base), packing=True, enable_thinking=False)
    train(cfg)
    adapter = cfg.run_dir / "lora_adapters"
    targets = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    assert set(targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkv", "in_proj_z", "out_proj",
                            "gate_proj", "up_proj", "down_proj"}
    assert json.loads((adapter / "qwen_sft.json").read_text())["lora_layers"] == {
        "full attention": {"modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers": 1, "of": 1},
        "linear attention": {"modules": ["in_proj_qkv", "in_proj_z", "out_proj"], "layers": 3, "of": 3},
        "MLP": {"modules": ["gate_proj", "up_proj", "down_proj"], "layers": 4, "of": 4}}

    published = json.loads((base / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert json.loads((adapter / "tokenizer_config.json").read_text())["added_tokens_decoder"] == published

    merged = merge(None, adapter, tmp_path / "merged", dtype="float32")
    base_files = {p.name for p in base.iterdir()}
    assert {p.name for p in merged.iterdir()} == base_files | {"qwen_sft.json", "generation_config.json"}
    base_cfg, merged_cfg = (json.loads((d / "config.json").read_text()) for d in (base, merged))
    assert merged_cfg["architectures"] == base_cfg["architectures"] == [
        "Qwen3_5ForCausalLM" if text_only else "Qwen3_5ForConditionalGeneration"]
    legacy = {"dtype", "torch_dtype"}  # the merged dtype, also under its transformers-4 name
    assert {k: v for k, v in merged_cfg.items() if k not in legacy} == {
        k: v for k, v in base_cfg.items() if k not in legacy
    }
    before, after = _tensors(base), _tensors(merged)
    assert before.keys() == after.keys()
    changed = {k for k in before if before[k] != after[k]}
    lm = "model." if text_only else "model.language_model."
    adapted = {f"{lm}layers.{i}.{m}.weight" for i, kind in enumerate(["linear_attn"] * 3 + ["self_attn"])
               for m in ({"linear_attn": ["in_proj_qkv", "in_proj_z", "out_proj"],
                          "self_attn": ["q_proj", "k_proj", "v_proj", "o_proj"]}[kind])
               for m in [f"{kind}.{m}"]} | {f"{lm}layers.{i}.mlp.{m}_proj.weight" for i in range(4)
                                              for m in ("gate", "up", "down")}
    assert changed == adapted  # the vision tower, the MTP head and every other tensor: byte for byte
    if not text_only:
        assert any(k.startswith("model.visual.") for k in before) and any(k.startswith("mtp.") for k in before)
        own, info = Qwen3_5ForConditionalGeneration.from_pretrained(merged, output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"]
        assert type(own).__name__ == "Qwen3_5ForConditionalGeneration"
    assert AutoConfig.from_pretrained(merged).model_type == base_cfg["model_type"]
    assert type(AutoModelForCausalLM.from_pretrained(merged)).__name__ == "Qwen3_5ForCausalLM"  # the text path

    report = validate(None, adapter, merged, ["Name fact number 3."], dtype="float32", verbose=False)
    assert report.ok and report.prompts[0].adapter_effect > 10 * report.prompts[0].tolerance, report.summary()

    for served_from in (merged, adapter):
        model, tok, served = load_for_chat(served_from)
        reply = generate_reply(model, tok, [{"role": "user", "content": "Name fact number 3."}], 6, served, greedy=True)
        assert len(reply.token_ids) > 0
