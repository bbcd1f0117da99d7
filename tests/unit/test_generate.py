"""chat: one-shot and interactive, from an adapter directory and from a merged directory."""

import argparse
import builtins
import json
import shutil

import pytest

from qwen_sft import generate as gen_mod
from qwen_sft.generate import add_chat_args, chat_once, generate_reply, load_for_chat, run_chat
from qwen_sft.merge import merge
from qwen_sft.model import build_tiny_model
from qwen_sft.testing import build_tiny_adapter

MESSAGES = [{"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base", seed=0)


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory):
    # scale 0.5: a strong enough adapter that the random model greedily emits visible text, not "\n\n"
    return build_tiny_adapter(tiny, tmp_path_factory.mktemp("run") / "lora_adapters", seed=3, scale=0.5)


@pytest.fixture(scope="module")
def merged(adapter, tmp_path_factory):
    return merge(None, adapter, tmp_path_factory.mktemp("merged") / "m32", dtype="float32")


def _args(*argv):
    return add_chat_args(argparse.ArgumentParser()).parse_args([str(a) for a in argv])


def test_adapter_dir_and_merged_dir_give_the_same_greedy_tokens(adapter, merged):
    from peft import PeftModel

    from_adapter = load_for_chat(adapter, device="cpu")
    from_merged = load_for_chat(merged, device="cpu")
    assert isinstance(from_adapter.model, PeftModel) and not isinstance(from_merged.model, PeftModel)
    assert from_adapter.enable_thinking is False and from_merged.enable_thinking is False
    a = generate_reply(*from_adapter[:2], MESSAGES, max_new_tokens=8, greedy=True)
    m = generate_reply(*from_merged[:2], MESSAGES, max_new_tokens=8, greedy=True)
    assert a.token_ids == m.token_ids and len(a.token_ids) == 8
    assert a.text and a.text == m.text
    assert not a.stopped  # a random model does not reach <|im_end|> in 8 tokens
    # Greedy is deterministic; sampling follows the model's generation_config.
    assert chat_once(*from_merged[:2], MESSAGES, 8, False, stream=False, greedy=True) == m.text


@pytest.mark.parametrize("which", ["adapter", "merged"])
def test_one_shot_prints_the_reply(which, adapter, merged, capsys):
    path = adapter if which == "adapter" else merged
    assert run_chat(_args(path, "--prompt", "Tell me a story.", "--greedy", "--max_new_tokens", 6)) == 0
    printed = capsys.readouterr().out.strip()
    expected = generate_reply(*load_for_chat(path)[:2], MESSAGES, 6, greedy=True).text  # same device as run_chat
    assert printed and printed == expected


def test_interactive_loop_keeps_history_and_exits(merged, monkeypatch, capsys):
    calls = []
    real = gen_mod.generate_reply

    def spy(model, tok, messages, *a, **kw):
        calls.append([dict(m) for m in messages])
        return real(model, tok, messages, *a, **kw)

    lines = iter(["Hello!", "", "And then?", "exit", "never read"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    monkeypatch.setattr(gen_mod, "generate_reply", spy)
    assert run_chat(_args(merged, "--greedy", "--max_new_tokens", 3, "--system", "Be brief.")) == 0
    assert len(calls) == 2
    assert [m["role"] for m in calls[1]] == ["system", "user", "assistant", "user"]
    assert calls[1][1]["content"] == "Hello!" and calls[1][3]["content"] == "And then?"
    assert calls[1][2]["content"]  # the first reply is kept in the history
    assert next(lines) == "never read"

    def eof(prompt=""):
        raise EOFError

    monkeypatch.setattr(builtins, "input", eof)
    assert run_chat(_args(merged, "--greedy", "--max_new_tokens", 3)) == 0


def test_enable_thinking_defaults_to_training_and_can_be_overridden(adapter, tmp_path, monkeypatch):
    thinking_adapter = tmp_path / "lora_adapters"
    shutil.copytree(adapter, thinking_adapter)
    meta = json.loads((thinking_adapter / "qwen_sft.json").read_text())
    (thinking_adapter / "qwen_sft.json").write_text(json.dumps(dict(meta, enable_thinking=True)))
    assert load_for_chat(thinking_adapter, device="cpu").enable_thinking is True

    seen = []
    monkeypatch.setattr(gen_mod, "chat_once", lambda m, t, msgs, n, thinking, **kw: seen.append(thinking) or "")
    run_chat(_args(thinking_adapter, "--prompt", "hi"))
    run_chat(_args(thinking_adapter, "--prompt", "hi", "--no-enable_thinking"))
    run_chat(_args(adapter, "--prompt", "hi", "--enable_thinking"))
    assert seen == [True, False, True]
