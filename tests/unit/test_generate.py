"""chat: one-shot and interactive, from an adapter directory and from a merged directory."""

import argparse
import builtins
import json
import shutil

import pytest

from qwen_sft import generate as gen_mod
from qwen_sft import merge as merge_mod
from qwen_sft.data.formats import Conversation
from qwen_sft.data.template import served_prompt_ids
from qwen_sft.errors import UserError
from qwen_sft.evaluation.passes import generate_greedy
from qwen_sft.generate import add_chat_args, chat_once, generate_reply, load_for_chat, run_chat
from qwen_sft.merge import merge
from qwen_sft.model import build_tiny_model
from qwen_sft.testing import build_tiny_adapter
from qwen_sft.ui import chatworker
from tests.tiny import tiny_model_dir

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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("which", ["adapter", "merged"])
def test_one_shot_prints_the_reply(which, adapter, merged, capsys):
    path = adapter if which == "adapter" else merged
    assert run_chat(_args(path, "--prompt", "Tell me a story.", "--greedy", "--max_new_tokens", 6)) == 0
    printed = capsys.readouterr().out.strip()
    expected = generate_reply(*load_for_chat(path)[:2], MESSAGES, 6, greedy=True).text  # same device as run_chat
    assert printed and printed == expected


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---------------------------------------------------------------- one generation function (#25)

PROMPTS = [
    [{"role": "user", "content": "Tell me a story."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好，介绍一下你自己。"}],
]


class FakeChannel:
    """The worker's channel without pipes: the events it emits, and the ids cancelled."""

    def __init__(self, on_text=None):
        self.events, self.cancelled, self.on_text = [], set(), on_text

    def emit(self, **event):
        self.events.append(event)
        if event["event"] == "text" and self.on_text:
            self.on_text(event)


def _worker(chat, messages, n, **cmd):
    channel = FakeChannel(cmd.pop("on_text", None))
    chatworker.generate(chat, channel, {"cmd": "generate", "id": 1, "messages": messages, "max_new_tokens": n, **cmd})
    done = channel.events[-1]
    assert done["event"] == "done", channel.events
    streamed = "".join(e["text"] for e in channel.events if e["event"] == "text")
    return done, streamed


def _callers(chat, messages, n):
    """(tokens or count, text, stopped) from each caller of generate_reply, on the same prompt."""
    model, tok, mode = chat
    reply = generate_reply(model, tok, messages, n, mode, greedy=True)
    gen = generate_greedy(model, tok, Conversation(messages + [{"role": "assistant", "content": "x"}]), mode, n)
    done, streamed = _worker(chat, messages, n, sampling={"do_sample": False})
    return reply, gen, merge_mod._greedy(model, tok, messages, mode, n), done, streamed


@pytest.fixture(scope="module", params=["hybrid", "thinking-2507"])
def chat(request, tmp_path_factory):
    base = tiny_model_dir(request.param)
    adapter = build_tiny_adapter(base, tmp_path_factory.mktemp("gen") / "lora_adapters", seed=3, scale=0.5,
                                 enable_thinking=request.param == "thinking-2507")
    return load_for_chat(adapter, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("messages", PROMPTS)
def test_chat_eval_merge_and_the_chat_worker_generate_the_same_tokens(chat, messages):
    reply, gen, merge_tokens, done, streamed = _callers(chat, messages, 12)
    assert len(reply.token_ids) == 12 and not reply.stopped  # a random model does not stop within 12 tokens
    assert gen.token_ids == merge_tokens == reply.token_ids
    assert gen.text == done["text"].strip() == reply.text and streamed == done["text"] == reply.written
    assert done["new_tokens"] == 12 and gen.stopped is done["stopped"] is False and done["cancelled"] is False
    if chat.enable_thinking:  # Thinking-2507: the prompt opened the think block; every caller's text starts with it
        assert reply.text.startswith("<think>") and streamed.startswith("<think>\n")


def test_one_stop_rule_from_the_models_eos_list(chat):
    model, tok, mode = chat
    messages = PROMPTS[0]
    free = generate_reply(model, tok, messages, 12, mode, greedy=True).token_ids
    k = next((i for i in range(1, 12) if free[i] not in free[:i]), 0)  # its first token written again later: 0
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [free[k]]  # the model's own eos list names the token written k-th
    try:
        reply, gen, merge_tokens, done, _ = _callers(chat, messages, 12)
    finally:
        model.generation_config.eos_token_id = saved
    assert reply.token_ids == gen.token_ids == merge_tokens == free[:k + 1]
    assert reply.stopped and gen.stopped and done["stopped"] and done["new_tokens"] == k + 1
    assert gen_mod.stop_ids(model, tok)[:len(saved)] == saved and tok.eos_token_id in gen_mod.stop_ids(model, tok)


def test_sampling_is_per_request_and_leaves_the_models_generation_config_alone(chat):
    model, tok, mode = chat
    before = model.generation_config.to_dict()
    seen = []
    # top_k 1: sampling that can only pick the greedy token, so the request's values are seen to be used.
    done, _ = _worker(chat, PROMPTS[0], 6, sampling={"do_sample": True, "temperature": 0.3, "top_k": 1},
                      on_text=lambda e: seen.append(model.generation_config.to_dict()))
    assert seen and all(s == before for s in seen)  # not swapped in place while the request ran
    assert model.generation_config.to_dict() == before
    assert done["text"] == generate_reply(model, tok, PROMPTS[0], 6, mode, greedy=True).written
    sampled = generate_reply(model, tok, PROMPTS[0], 6, mode, sampling={"do_sample": True, "top_k": 1})
    assert sampled.written == done["text"] and model.generation_config.to_dict() == before
    with pytest.raises(UserError, match="sampling: 'beams' is not one of"):
        generate_reply(model, tok, PROMPTS[0], 6, mode, sampling={"beams": 2})


def test_the_worker_cancels_at_the_next_token_and_keeps_what_was_written(chat):
    model, tok, mode = chat
    channel = FakeChannel(on_text=lambda event: channel.cancelled.add("1"))  # cancelled as the first text arrives
    chatworker.generate(chat, channel, {"cmd": "generate", "id": 1, "messages": PROMPTS[0], "max_new_tokens": 40,
                                        "sampling": {"do_sample": False}})
    done = channel.events[-1]
    full = generate_reply(model, tok, PROMPTS[0], 40, mode, greedy=True)
    assert done["cancelled"] is True and done["stopped"] is False and 0 < done["new_tokens"] < 40
    assert full.written.startswith(done["text"]) and not channel.cancelled  # the worker forgets a finished cancel


def test_template_options_reach_the_chat_template(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{% if preserve_thinking %}PROBE{% endif %}" + tokenizer.chat_template
    messages = PROMPTS[0]
    plain = served_prompt_ids(tok, messages, False)
    probed = served_prompt_ids(tok, messages, False, options={"preserve_thinking": True})
    assert probed == tok("PROBE", add_special_tokens=False)["input_ids"] + plain
    # the mode argument is the one a caller served: the options cannot contradict it
    assert served_prompt_ids(tok, messages, False, options={"enable_thinking": True}) == plain
