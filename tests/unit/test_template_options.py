"""The template options a model was trained with (preserve_thinking, reasoning_effort: data/template.py) reach
the prompts of chat, eval and the template fidelity check, from qwen_sft.json, through template_kwargs (#22)."""

import json

import pytest
from qwen_sft.data.tokenizer import load_tokenizer

from qwen_sft.assets import qwen3_5_checkpoint_dir
from qwen_sft.data.formats import parse_row
from qwen_sft.errors import UserError

LOW = "Reasoning effort is set to low."


@pytest.fixture(scope="module")
def tok38():
    return load_tokenizer(str(qwen3_5_checkpoint_dir("Qwen3.8-27B")))


def _model_dir(tmp_path, tok, meta):
    """A saved (merged-style) model directory's tokenizer and qwen_sft.json; no weights (not loaded here)."""
    d = tmp_path / "merged"
    tok.save_pretrained(d)
    (d / "qwen_sft.json").write_text(json.dumps({"base_model": "base", "enable_thinking": True, **meta}))
    return d


class PromptRecorder:
    """A model for generate.generate_reply that keeps the prompt ids each generation was given (`seen`) and
    generates nothing."""

    def __init__(self):
        from transformers import GenerationConfig

        self.seen = []
        self.generation_config = GenerationConfig(eos_token_id=[0])

    def parameters(self):
        import torch

        return iter([torch.zeros(1)])

    def generate(self, input_ids, **kwargs):
        self.seen.append(input_ids[0].tolist())
        return input_ids


@pytest.fixture
def prompts():
    return PromptRecorder()


def test_chat_uses_the_saved_options(tmp_path, tok38, prompts, monkeypatch, capsys):
    import qwen_sft.generate as generate

    d = _model_dir(tmp_path, tok38, {"reasoning_effort": "low"})
    monkeypatch.setattr(generate, "load_for_chat", lambda path, **k: generate.ChatModel(prompts, tok38, True))
    args = generate.add_chat_args(__import__("argparse").ArgumentParser()).parse_args([str(d), "--prompt", "hi",
                                                                                        "--max_new_tokens", "2"])
    assert generate.run_chat(args) == 0
    assert LOW in tok38.decode(prompts.seen[-1])
    # An option the saved template does not know is refused before any generation.
    (d / "qwen_sft.json").write_text(json.dumps({"enable_thinking": True, "reasoning_effort": "max"}))
    with pytest.raises(UserError, match="reasoning_effort: 'max' is refused by"):
        generate.run_chat(args)


@pytest.mark.slow
def test_eval_generations_and_the_fidelity_check_use_the_saved_options(tmp_path, tok38, prompts):
    from qwen_sft.data.fidelity import check_template_fidelity
    from qwen_sft.evaluation.passes import generate_greedy

    conv = parse_row({"instruction": "2+2?", "output": "<think>\nadd\n</think>\n\n4"}, None)
    generate_greedy(prompts, tok38, conv, True, 2, {"reasoning_effort": "low"})
    assert LOW in tok38.decode(prompts.seen[-1])
    d = _model_dir(tmp_path, tok38, {"reasoning_effort": "low"})
    assert check_template_fidelity(d, [conv]) == []
    (d / "qwen_sft.json").write_text(json.dumps({"enable_thinking": True, "reasoning_effort": "max"}))
    problems = check_template_fidelity(d, [conv])
    assert len(problems) == 1 and "reasoning_effort: 'max' is refused by" in problems[0]
