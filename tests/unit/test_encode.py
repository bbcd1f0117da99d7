"""Exact label masks on the real Qwen3 tokenizer and chat template (qwen_sft.data.encode).

Expected masks are pinned as literal (token id, trained?) pairs. Labels follow the HF convention:
labels[i] == input_ids[i] where trained, -100 elsewhere, not shifted.
Ids: <|im_start|> 151644, <|im_end|> 151645, <think> 151667, </think> 151668, '\\n' 198, '\\n\\n' 271,
'assistant' 77091, 'user' 872, 'system' 8948.
"""

import pytest

from qwen_sft.data.dataset import encode_all
from qwen_sft.data.encode import (
    IGNORE_INDEX, EncodeError, EncodeOptions, encode, inference_prompt_ids, render, assistant_turns,
)
from qwen_sft.data.formats import parse_row

IM_START, IM_END, THINK, END_THINK, NL, NL2, ASSISTANT = 151644, 151645, 151667, 151668, 198, 271, 77091


def enc(row, tokenizer, **opts):
    return encode(parse_row(row, None), tokenizer, EncodeOptions(**opts))


def pairs(e):
    """(token id, trained?) pairs, after checking the HF label convention."""
    assert len(e.labels) == len(e.input_ids)
    assert all(lab in (tid, IGNORE_INDEX) for tid, lab in zip(e.input_ids, e.labels))
    return [(tid, lab != IGNORE_INDEX) for tid, lab in zip(e.input_ids, e.labels)]


def sequences(e):
    """The row's sequences: the whole conversation, then one per earlier reply it does not hold as served."""
    return [e] + e.more


def all_runs(tok, e):
    """The decoded trained runs of every sequence of the row, in message order (a later sequence ends earlier)."""
    return [tok.decode(s.input_ids[a:b]) for s in reversed(sequences(e)) for a, b in trained_runs(s)]


def trained_runs(e):
    """Maximal runs [start, end) of consecutive trained positions."""
    runs, start = [], None
    for i, lab in enumerate(e.labels + [IGNORE_INDEX]):
        if lab != IGNORE_INDEX and start is None:
            start = i
        elif lab == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


# ---------------------------------------------------------------- pinned masks

F, T = False, True

SINGLE = [  # {"instruction": "Hi", "output": "Hello, world"}, enable_thinking=False
    (151644, F), (872, F), (198, F), (13048, F), (151645, F),  # '<|im_start|>user\nHi<|im_end|>'
    # '\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
    (198, F), (151644, F), (77091, F), (198, F), (151667, F), (271, F), (151668, F), (271, F),
    (9707, T), (11, T), (1879, T), (151645, T),  # 'Hello, world<|im_end|>'
    (198, F),  # '\n'
]

WITH_INPUT = [  # instruction + input joined by a blank line
    # '<|im_start|>user\nTranslate to English\n\nBonjour<|im_end|>'
    (151644, F), (872, F), (198, F), (27473, F), (311, F), (6364, F), (271, F), (81581, F), (151645, F),
    # '\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
    (198, F), (151644, F), (77091, F), (198, F), (151667, F), (271, F), (151668, F), (271, F),
    (9707, T), (151645, T),  # 'Hello<|im_end|>'
    (198, F),  # '\n'
]

SYSTEM = [
    # '<|im_start|>system\nBe brief.<|im_end|>'
    (151644, F), (8948, F), (198, F), (3430, F), (9814, F), (13, F), (151645, F),
    (198, F), (151644, F), (872, F), (198, F), (13048, F), (151645, F),  # '\n<|im_start|>user\nHi<|im_end|>'
    # '\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
    (198, F), (151644, F), (77091, F), (198, F), (151667, F), (271, F), (151668, F), (271, F),
    (9707, T), (11, T), (1879, T), (151645, T),  # 'Hello, world<|im_end|>'
    (198, F),  # '\n'
]

HISTORY_ROW = {"instruction": "And 3+3?", "output": "6", "history": [["What is 2+2?", "4"]]}

HISTORY_ALL = [
    # '<|im_start|>user\nWhat is 2+2?<|im_end|>'
    (151644, F), (872, F), (198, F), (3838, F), (374, F), (220, F), (17, F), (10, F), (17, F), (30, F), (151645, F),
    (198, F), (151644, F), (77091, F), (198, F),  # '\n<|im_start|>assistant\n'  (no think block before the last query)
    (19, T), (151645, T),  # '4<|im_end|>'
    # '\n<|im_start|>user\nAnd 3+3?<|im_end|>'
    (198, F), (151644, F), (872, F), (198, F), (3036, F), (220, F), (18, F), (10, F), (18, F), (30, F), (151645, F),
    # '\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
    (198, F), (151644, F), (77091, F), (198, F), (151667, F), (271, F), (151668, F), (271, F),
    (21, T), (151645, T),  # '6<|im_end|>'
    (198, F),  # '\n'
]

HISTORY_LAST = [(tid, trained and i >= 29) for i, (tid, trained) in enumerate(HISTORY_ALL)]

# The first reply, in a sequence of its own: in the whole row the template renders it without the empty think
# block that its served prompt ends with.
HISTORY_FIRST = [
    # '<|im_start|>user\nWhat is 2+2?<|im_end|>'
    (151644, F), (872, F), (198, F), (3838, F), (374, F), (220, F), (17, F), (10, F), (17, F), (30, F), (151645, F),
    # '\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
    (198, F), (151644, F), (77091, F), (198, F), (151667, F), (271, F), (151668, F), (271, F),
    (19, T), (151645, T),  # '4<|im_end|>'
    (198, F),  # '\n'
]

REASONING_ROW = {"messages": [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "Add them."},
]}
INLINE_REASONING_ROW = {"instruction": "2+2?", "output": "<think>\nAdd them.\n</think>\n\n4"}

REASONING_OFF = [  # reasoning dropped; the empty think block is prompt side
    # '<|im_start|>user\n2+2?<|im_end|>'
    (151644, F), (872, F), (198, F), (17, F), (10, F), (17, F), (30, F), (151645, F),
    # '\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
    (198, F), (151644, F), (77091, F), (198, F), (151667, F), (271, F), (151668, F), (271, F),
    (19, T), (151645, T),  # '4<|im_end|>'
    (198, F),  # '\n'
]

REASONING_ON = [  # the think block with the reasoning is trained
    # '<|im_start|>user\n2+2?<|im_end|>'
    (151644, F), (872, F), (198, F), (17, F), (10, F), (17, F), (30, F), (151645, F),
    (198, F), (151644, F), (77091, F), (198, F),  # '\n<|im_start|>assistant\n'
    # '<think>\nAdd them.\n</think>\n\n4<|im_end|>'
    (151667, T), (198, T), (2212, T), (1105, T), (624, T), (151668, T), (271, T), (19, T), (151645, T),
    (198, F),  # '\n'
]

PLAIN_ON = [  # enable_thinking=True, row without reasoning: the empty think block is trained
    (151644, F), (872, F), (198, F), (13048, F), (151645, F),  # '<|im_start|>user\nHi<|im_end|>'
    (198, F), (151644, F), (77091, F), (198, F),  # '\n<|im_start|>assistant\n'
    # '<think>\n\n</think>\n\nHello, world<|im_end|>'
    (151667, T), (271, T), (151668, T), (271, T), (9707, T), (11, T), (1879, T), (151645, T),
    (198, F),  # '\n'
]


def test_single_turn_alpaca(tokenizer):
    e = enc({"instruction": "Hi", "output": "Hello, world"}, tokenizer)
    assert pairs(e) == SINGLE
    assert e.input_ids == [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271,
                           9707, 11, 1879, 151645, 198]
    assert e.labels == [-100] * 13 + [9707, 11, 1879, 151645, -100]
    assert (e.truncated, e.reply_cut, e.thinking, e.reasoning_dropped) == (False, False, False, False)
    assert e.num_trained == 4


def test_alpaca_with_input(tokenizer):
    conv = parse_row({"instruction": "Translate to English", "input": "Bonjour", "output": "Hello"}, None)
    assert conv.messages[0] == {"role": "user", "content": "Translate to English\n\nBonjour"}
    assert pairs(encode(conv, tokenizer, EncodeOptions())) == WITH_INPUT


def test_system_prompt(tokenizer):
    e = enc({"system": "Be brief.", "instruction": "Hi", "output": "Hello, world"}, tokenizer)
    assert pairs(e) == SYSTEM


def test_multi_turn_trains_every_assistant_turn(tokenizer):
    # Each reply after its own served prompt: the first one in a sequence of its own. (Before #22 the first reply
    # was trained in the whole row right after its header, '4<|im_end|>' without the empty think block that its
    # served prompt ends with: a prompt no server builds.)
    e = enc(HISTORY_ROW, tokenizer)
    assert pairs(e) == HISTORY_LAST
    assert [pairs(s) for s in e.more] == [HISTORY_FIRST]
    assert (e.continues_row, e.more[0].continues_row) == (False, True)


def test_multi_turn_train_on_last(tokenizer):
    e = enc(HISTORY_ROW, tokenizer, train_on="last")
    assert pairs(e) == HISTORY_LAST and e.more == []
    assert [tid for tid, trained in pairs(e) if trained] == [21, 151645]
    # Same tokens either way: train_on changes the mask only.
    assert e.input_ids == [tid for tid, _ in HISTORY_ALL]


@pytest.mark.parametrize("row", [REASONING_ROW, INLINE_REASONING_ROW], ids=["reasoning_content", "inline_think"])
def test_reasoning_dropped_when_thinking_off(tokenizer, row):
    e = enc(row, tokenizer)
    assert pairs(e) == REASONING_OFF
    assert e.reasoning_dropped is True and e.thinking is False
    text, dropped = render(parse_row(row, None), tokenizer, enable_thinking=False)
    assert dropped and "Add them." not in text


@pytest.mark.parametrize("row", [REASONING_ROW, INLINE_REASONING_ROW], ids=["reasoning_content", "inline_think"])
def test_reasoning_trained_when_thinking_on(tokenizer, row):
    e = enc(row, tokenizer, enable_thinking=True)
    assert pairs(e) == REASONING_ON
    assert e.thinking is True and e.reasoning_dropped is False


def test_thinking_on_without_reasoning_trains_empty_think_block(tokenizer):
    e = enc({"instruction": "Hi", "output": "Hello, world"}, tokenizer, enable_thinking=True)
    assert pairs(e) == PLAIN_ON
    assert e.thinking is False  # no non-empty reasoning is trained


def test_thinking_flag_counts_only_trained_reasoning(tokenizer):
    # The template drops reasoning of turns before the last user query: such a row trains no reasoning.
    row = {"messages": [
        {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"},
    ]}
    e = enc(row, tokenizer, enable_thinking=True)
    assert "R1" not in tokenizer.decode(e.input_ids)
    assert e.thinking is False
    row["messages"][3]["reasoning_content"] = "R2"
    assert enc(row, tokenizer, enable_thinking=True).thinking is True


# ---------------------------------------------------------------- truncation


def test_truncation_cuts_reply_without_appending_im_end(tokenizer):
    e = enc({"instruction": "Hi", "output": "Hello, world"}, tokenizer, cutoff_len=15)
    assert pairs(e) == SINGLE[:15]
    assert e.input_ids[-2:] == [9707, 11] and IM_END not in e.input_ids[13:]
    assert e.labels[-2:] == [9707, 11]
    assert e.truncated is True and e.reply_cut is True
    assert e.num_trained == 2


def test_truncation_of_untrained_tail_is_not_a_reply_cut(tokenizer):
    e = enc({"instruction": "Hi", "output": "Hello, world"}, tokenizer, cutoff_len=17)
    assert pairs(e) == SINGLE[:17]  # only the final '\n' is gone
    assert e.truncated is True and e.reply_cut is False


def test_no_truncation_at_exact_length(tokenizer):
    e = enc({"instruction": "Hi", "output": "Hello, world"}, tokenizer, cutoff_len=18)
    assert pairs(e) == SINGLE and e.truncated is False


def test_prompt_longer_than_cutoff_has_no_trained_token(tokenizer):
    e = enc({"instruction": "Hi", "output": "Hello, world"}, tokenizer, cutoff_len=12)
    assert e.num_trained == 0 and len(e.input_ids) == 12 and e.truncated is True


def test_encode_all_drops_rows_without_trained_tokens_and_reports_them(tokenizer, tmp_path):
    from qwen_sft.config import TrainConfig

    path = tmp_path / "train.jsonl"
    path.write_text('{"instruction": "Hi", "output": "Hello, world"}\n'
                    '{"instruction": "' + "word " * 40 + '", "output": "ok"}\n'
                    '{"instruction": "Hi", "output": "Hello, world, and a long reply"}\n', encoding="utf-8")
    cfg = TrainConfig(dataset=str(path), cutoff_len=20)
    kept, report = encode_all(cfg, tokenizer)
    assert [e.source for e in kept] == [f"{path}:1", f"{path}:3"]
    assert pairs(kept[0]) == SINGLE
    assert kept[1].reply_cut is True and len(kept[1].input_ids) == 20
    assert report["rows_read"] == 3 and report["rows_kept"] == 2
    assert report["dropped_no_trained_tokens"] == 1 and report["rows_dropped_total"] == 1
    # The real prompt length (issue #18 case 10: it said "prompt is 20+ tokens", the cutoff, not the prompt).
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "word " * 40}], add_generation_prompt=True,
                                           enable_thinking=False, tokenize=True)["input_ids"]
    assert len(prompt) > 20
    assert report["dropped_examples"] == [f"{path}:2: no trained token within cutoff_len=20 (the prompt before the "
                                          f"first trained token is {len(prompt)} tokens)"]
    assert report["rows_truncated"] == 1 and report["rows_reply_cut"] == 1
    assert report["tokens"] == 38 and report["trained_tokens"] == 4 + 7
    assert report["length_percentiles"]["max"] == 20


# ---------------------------------------------------------------- tools


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOL_ROW = {"tools": TOOLS, "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": '{"temp_c": 21}'},
    {"role": "assistant", "content": "It is 21 C in Paris."},
]}

# '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
TOOL_CALL_IDS = [151657, 198, 4913, 606, 788, 330, 455, 69364, 497, 330, 16370, 788, 5212, 8926, 788, 330, 59604,
                 95642, 151658, 151645]
# '\n<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>\n'
# '<|im_start|>assistant\n'
TOOL_RESPONSE_IDS = [198, 151644, 872, 198, 151665, 198, 4913, 3888, 666, 788, 220, 17, 16, 532, 151666, 151645,
                     198, 151644, 77091, 198]
FINAL_IDS = [2132, 374, 220, 17, 16, 356, 304, 12095, 13, 151645]  # 'It is 21 C in Paris.<|im_end|>'


@pytest.mark.parametrize("thinking", [False, True])
def test_tool_calling_row_never_trains_tool_text(tokenizer, thinking):
    # Qwen3's template renders the tool call in the whole row without a think block (it is not the last turn
    # and has no reasoning), while its served prompt ends with the empty block (thinking off) or the model
    # writes one (thinking on): the call is trained in a sequence of its own, after its served prompt. (Before
    # #22 it was trained in the whole row right after its header, in both modes.)
    think = [THINK, NL2, END_THINK, NL2]
    e = enc(TOOL_ROW, tokenizer, enable_thinking=thinking)
    p = pairs(e)
    (c, d), = trained_runs(e)
    assert e.input_ids[c:d] == (think if thinking else []) + FINAL_IDS
    assert d == len(p) - 1 and p[-1] == (NL, False)
    # Before the final reply: the tool call, the tool turn and the next header, all untrained.
    assert e.input_ids[c - len(TOOL_RESPONSE_IDS) - (0 if thinking else 4):c] == \
        TOOL_RESPONSE_IDS + ([] if thinking else think)
    call, = e.more
    (a, b), = trained_runs(call)
    assert call.input_ids[a:b] == (think if thinking else []) + TOOL_CALL_IDS
    assert call.input_ids[:a] == inference_prompt_ids(parse_row({**TOOL_ROW, "messages": TOOL_ROW["messages"][:2]},
                                                                None), tokenizer, thinking)
    assert call.input_ids[b:] == [NL] and call.continues_row
    # The system prompt with the tool signatures is prompt side too.
    assert a > 100 and not any(trained for _, trained in pairs(call)[:a])
    texts = all_runs(tokenizer, e)
    assert "temp_c" not in "".join(texts) and "get_weather" in texts[0]


# ---------------------------------------------------------------- properties over several rows


PROPERTY_ROWS = [
    # (row, last turn's reasoning as the template writes it in thinking mode, last turn's content)
    ({"instruction": "Hi", "output": "Hello, world"}, "", "Hello, world"),
    ({"system": "Be brief.", "instruction": "Translate", "input": "Bonjour", "output": "Hello"}, "", "Hello"),
    (HISTORY_ROW, "", "6"),
    (REASONING_ROW, "Add them.", "4"),
    (INLINE_REASONING_ROW, "Add them.", "4"),
    ({"messages": [
        {"role": "system", "content": "You are a poet."},
        {"role": "user", "content": "A haiku about rain, please."},
        {"role": "assistant", "content": "Soft rain on the roof", "reasoning_content": "old"},
        {"role": "user", "content": "Now one about snow, in French."},
        {"role": "assistant", "content": "Neige sur les toits\nle silence tombe, blanc —\nl'hiver se souvient.",
         "reasoning_content": "Five, seven, five syllables.\nFrench words."},
    ]}, "Five, seven, five syllables.\nFrench words.", "Neige sur les toits\nle silence tombe, blanc —\nl'hiver se "
                                                       "souvient."),
    ({"conversations": [{"from": "system", "value": "Answer in code."},
                        {"from": "human", "value": "Print hi in Python"},
                        {"from": "gpt", "value": "```python\nprint(\"hi\")\n```"}]},
     "", "```python\nprint(\"hi\")\n```"),
    ({"instruction": "Say hi", "output": "\n\n  Hi there!  "}, "", "  Hi there!  "),
    ({"instruction": "数学: 2+2?", "output": "等于四。🙂"}, "", "等于四。🙂"),
    (TOOL_ROW, "", "It is 21 C in Paris."),
]


@pytest.mark.parametrize("thinking", [False, True], ids=["no_think", "think"])
@pytest.mark.parametrize("idx", range(len(PROPERTY_ROWS)))
def test_training_prefix_is_the_inference_prompt(tokenizer, idx, thinking):
    row, reasoning, content = PROPERTY_ROWS[idx]
    conv = parse_row(row, None)
    for train_on in ("all", "last"):
        e = encode(conv, tokenizer, EncodeOptions(enable_thinking=thinking, train_on=train_on))
        start, end = trained_runs(e)[-1]
        assert e.input_ids[:start] == inference_prompt_ids(conv, tokenizer, thinking)
        completion = f"<think>\n{reasoning}\n</think>\n\n{content}<|im_end|>" if thinking else f"{content}<|im_end|>"
        assert e.input_ids[start:end] == tokenizer(completion, add_special_tokens=False).input_ids
        assert e.input_ids[end:] == [NL]
        if train_on == "last":
            assert e.num_trained == end - start


@pytest.mark.parametrize("thinking", [False, True], ids=["no_think", "think"])
@pytest.mark.parametrize("idx", range(len(PROPERTY_ROWS)))
def test_headers_and_newlines_after_im_end_never_trained(tokenizer, idx, thinking):
    e = encode(parse_row(PROPERTY_ROWS[idx][0], None), tokenizer, EncodeOptions(enable_thinking=thinking))
    p = pairs(e)
    ids = e.input_ids
    headers = [i for i in range(len(ids) - 2) if ids[i:i + 3] == [IM_START, ASSISTANT, NL]]
    assert len(headers) == sum(m["role"] == "assistant" for m in parse_row(PROPERTY_ROWS[idx][0], None).messages)
    for i in headers:
        assert p[i:i + 3] == [(IM_START, False), (ASSISTANT, False), (NL, False)]
    for i, tid in enumerate(ids[:-1]):
        if tid == IM_END:
            assert p[i + 1] == (NL, False)
        if tid == IM_START:
            assert p[i][1] is False
    # Every trained run ends with the turn's <|im_end|> (nothing is truncated here) and the number of
    # runs, over the row's sequences, is the number of assistant turns.
    for s in sequences(e)[1:]:
        q = pairs(s)
        for i in range(len(s.input_ids) - 2):
            if s.input_ids[i:i + 3] == [IM_START, ASSISTANT, NL]:
                assert q[i:i + 3] == [(IM_START, False), (ASSISTANT, False), (NL, False)]
    runs = [(s, end) for s in sequences(e) for _, end in trained_runs(s)]
    assert len(runs) == len(headers)
    assert all(s.input_ids[end - 1] == IM_END for s, end in runs)


def test_leading_blank_lines_of_an_earlier_reply_do_not_break_encoding(tokenizer):
    # '\n' at the start of a non-final reply would merge with the header's '\n' into one token that
    # crosses the prompt/reply edge; the reader drops such leading blank lines.
    for lead in ("\n", "\n\n", " \n", "\t\n", "\r", " \r\n"):
        row = {"instruction": "Q2", "output": "A2", "history": [["Q1", lead + "A1"]]}
        e = enc(row, tokenizer)
        s, = e.more  # the first reply, after its own served prompt
        first, _ = trained_runs(s)[0]
        assert s.input_ids[first - 7:first] == [IM_START, ASSISTANT, NL, THINK, NL2, END_THINK, NL2]
        assert s.input_ids[first:first + 3] == tokenizer("A1<|im_end|>", add_special_tokens=False).input_ids


def test_foreign_template_shape_is_an_encode_error():
    with pytest.raises(EncodeError, match="rendered 0 assistant turns for 1"):
        assistant_turns("<|im_start|>user\nhi<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>", 1)
    with pytest.raises(EncodeError, match="without <\\|im_end\\|>"):
        assistant_turns("<|im_start|>assistant\nhi", "<|im_start|>assistant\n", "<|im_end|>", 1)


# ---------------------------------------------------------------- '</think>' inside an answer

# {"instruction": "q", "output": "<think>r</think>The tag </think> closes it."}, enable_thinking=False
END_TAG_IN_ANSWER = [
    (151644, F), (872, F), (198, F), (80, F), (151645, F),  # '<|im_start|>user\nq<|im_end|>'
    # '\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
    (198, F), (151644, F), (77091, F), (198, F), (151667, F), (271, F), (151668, F), (271, F),
    # 'The tag </think> closes it.<|im_end|>'
    (785, T), (4772, T), (220, T), (END_THINK, T), (33250, T), (432, T), (13, T), (151645, T),
    (198, F),  # '\n'
]


def test_end_think_tag_inside_the_answer_stays_answer_text(tokenizer):
    # The reader takes the inline think block out; a '</think>' left in the answer is answer text. The
    # template splits a content without a string reasoning_content at its last '</think>': thinking off,
    # this used to train '<think>\nThe tag\n</think>\n\n closes it.' after a prompt without the empty
    # think block (a prompt inference never builds).
    row = {"instruction": "q", "output": "<think>r</think>The tag </think> closes it."}
    e = enc(row, tokenizer)
    assert pairs(e) == END_TAG_IN_ANSWER
    start, _ = trained_runs(e)[0]
    assert e.input_ids[:start] == inference_prompt_ids(parse_row(row, None), tokenizer, False)
    on = enc(row, tokenizer, enable_thinking=True)
    start, end = trained_runs(on)[0]
    assert tokenizer.decode(on.input_ids[start:end]) == "<think>\nr\n</think>\n\nThe tag </think> closes it.<|im_end|>"


@pytest.mark.parametrize("thinking", [False, True])
def test_end_think_tag_after_empty_think_block_and_in_earlier_turns(tokenizer, thinking):
    # An empty inline think block leaves no reasoning_content: the template re-split the answer, in both modes.
    e = enc({"instruction": "q", "output": "<think></think>A</think>B"}, tokenizer, enable_thinking=thinking)
    (start, end), = trained_runs(e)
    empty_think = "<think>\n\n</think>\n\n" if thinking else ""
    assert tokenizer.decode(e.input_ids[start:end]) == empty_think + "A</think>B<|im_end|>"
    # An earlier reply lost the text before its '</think>' ('y' was trained instead of 'x</think>y').
    e = enc({"instruction": "q2", "output": "ok", "history": [["q1", "<think>r</think>x</think>y"]]}, tokenizer,
            enable_thinking=thinking)
    assert all_runs(tokenizer, e)[0] == ("<think>\nr\n</think>\n\n" if thinking else "") + "x</think>y<|im_end|>"


def test_whitespace_only_content_before_tool_calls_in_an_earlier_turn(tokenizer):
    # '  ' + the template's '\n' before <tool_call> merged with the header's '\n' into one token across the
    # prompt/reply edge: EncodeError, which stopped the whole run. The reader drops such content.
    row = {"tools": TOOLS, "messages": [TOOL_ROW["messages"][0], {**TOOL_ROW["messages"][1], "content": "  "},
                                       *TOOL_ROW["messages"][2:]]}
    for thinking in (False, True):
        want = pairs(enc(TOOL_ROW, tokenizer, enable_thinking=thinking))
        assert pairs(enc(row, tokenizer, enable_thinking=thinking)) == want


# ---------------------------------------------------------------- Qwen3.5 (#22)


@pytest.fixture(scope="module")
def qwen3_5_think():
    from qwen_sft.data.tokenizer import load_tokenizer

    from qwen_sft.assets import qwen3_5_checkpoint_dir

    return load_tokenizer(str(qwen3_5_checkpoint_dir("Qwen3.5-4B")))


def test_qwen3_5_tool_row_in_thinking_mode_trains_each_reply_after_its_served_prompt(qwen3_5_think):
    # The row: user -> tool call -> tool -> answer on the Qwen3.5 think template, enable_thinking true, was
    # refused ("the tokens before trained reply 2 are not the tokens of its served prompt"): the answer's served
    # prompt holds the call's empty think block as '<think>' '\n\n' '</think>', the call's own served prompt ends
    # in '<think>' '\n'. The call is trained in a sequence of its own.
    tok = qwen3_5_think
    conv = parse_row(TOOL_ROW, None)
    e = encode(conv, tok, EncodeOptions(enable_thinking=True))
    call = ("\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n"
            "</tool_call><|im_end|>")
    assert [tok.decode(s.input_ids[a:b]) for s in sequences(e) for a, b in trained_runs(s)] == \
        ["\n</think>\n\nIt is 21 C in Paris.<|im_end|>", call]
    (a, _), = trained_runs(e)
    assert e.input_ids[:a] == inference_prompt_ids(conv, tok, True)
    (c, _), = trained_runs(e.more[0])
    first = parse_row({**TOOL_ROW, "messages": TOOL_ROW["messages"][:2]}, None)
    assert e.more[0].input_ids[:c] == inference_prompt_ids(first, tok, True)
    assert tok.decode(e.more[0].input_ids[c - 2:c]) == "<think>\n"
    # Thinking off, every reply fits the whole row (the empty think block is on the prompt side): one sequence.
    off = encode(conv, tok, EncodeOptions(enable_thinking=False))
    assert off.more == [] and len(trained_runs(off)) == 2
