"""Each Qwen3 checkpoint family end to end on its tiny stand-in: hybrid with untied embeddings (the 8B/14B/32B
shape), Instruct-2507 and Thinking-2507 (their chat templates): train, record the template kind and the mode
trained, merge, validate the merge, and serve the prompt the model was trained on."""

import json

import pytest
import yaml

from qwen_sft.config import build_config
from qwen_sft.data.encode import IGNORE_INDEX
from qwen_sft.errors import UserError
from qwen_sft.generate import generate_reply, load_for_chat
from qwen_sft.merge import merge, validate
from qwen_sft.train import train
from tests.tiny import tiny_model_dir

ROWS = [{"instruction": f"Name fact number {i}.", "output": f"<think>\nFact {i} is easy.\n</think>\n\nFact {i} is {i * 7}."}
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
    from qwen_sft.evaluate import generate_greedy

    g = generate_greedy(model, tok, parse_row(ROWS[3], None), served, 8)
    assert g.text.startswith("<think>") is (kind == "thinking")


def test_thinking_model_trained_without_thinking_is_refused_before_training(tmp_path):
    cfg = _cfg(tmp_path, "thinking-2507", enable_thinking=False)
    with pytest.raises(UserError, match=r"enable_thinking: false, but .* always-thinking \(Thinking-2507 kind"):
        train(cfg)
    assert not (cfg.run_dir / "lora_adapters").exists() and not list(cfg.run_dir.glob("checkpoint-*"))


def test_thinking_2507_masks_follow_its_served_prompt_in_training(tmp_path):
    from qwen_sft.data.dataset import prepare
    from qwen_sft.model import load_tokenizer

    cfg = _cfg(tmp_path, "thinking-2507", enable_thinking=True)
    tok = load_tokenizer(cfg.model_name_or_path)
    row = prepare(cfg, tok, log=None).train[0]
    ids, labels = row.input_ids.tolist(), row.labels.tolist()
    first = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name fact number 0."}], add_generation_prompt=True)
    assert ids[:first] == list(prompt["input_ids"])
    assert tok.decode(ids[first:]).startswith("Fact 0 is easy.\n</think>\n\nFact 0 is 0.<|im_end|>")
