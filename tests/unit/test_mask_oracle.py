"""The label mask against an independent oracle, on many adversarial rows (real Qwen3 tokenizer and template).

The oracle does not use qwen_sft.data.encode. For each row (as the reader normalizes it) it states what
every assistant turn must emit from the message itself (README "What is trained"): the think block
(thinking on: the last reply always, an earlier reply after the last user query when it has reasoning;
thinking off: never trained), the content, the tool calls as Qwen3 writes them, and <|im_end|>. It then
renders the conversation with apply_chat_template, finds the assistant turns by string position, checks
that their text is exactly that, tokenizes with character offsets and labels the tokens inside the turns
(a token straddling an edge is a failure). It also checks that the prefix before the last reply is
apply_chat_template(history, add_generation_prompt=True) and that each trained run is the tokenization of
its turn text alone. encode() must give the same ids, labels and truncation flags, at cutoffs that cut
nothing, end right after the last <|im_end|>, just before it, mid-reply and inside the prompt.
"""

import copy
import json
import random
import re

import pytest

from qwen_sft.data.encode import IGNORE_INDEX, EncodeOptions, encode
from qwen_sft.data.formats import RowError, parse_row

EMPTY_THINK = "<think>\n\n</think>\n\n"
TURN = re.compile(r"<\|im_start\|>assistant\n(.*?)<\|im_end\|>", re.S)


# ---------------------------------------------------------------- the oracle


def _is_query(m):
    c = m.get("content")
    return m["role"] == "user" and isinstance(c, str) and not (c.startswith("<tool_response>") and c.endswith("</tool_response>"))


def _call_text(call):
    f = call.get("function", call)
    args = f["arguments"] if isinstance(f["arguments"], str) else json.dumps(f["arguments"], ensure_ascii=False)
    return '<tool_call>\n{"name": "' + f["name"] + '", "arguments": ' + args + "}\n</tool_call>"


def expected_turns(messages, thinking):
    """The text each assistant turn must emit, through its <|im_end|>."""
    last_query = max((i for i, m in enumerate(messages) if _is_query(m)), default=None)
    out = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        content, reasoning = m.get("content") or "", (m.get("reasoning_content") or "") if thinking else ""
        think = ""
        if thinking and (i == len(messages) - 1 or (last_query is not None and i > last_query and reasoning)):
            think, content = "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n", content.lstrip("\n")
        text = think + content
        for j, call in enumerate(m.get("tool_calls") or []):
            text += ("\n" if j or content else "") + _call_text(call)
        out.append(text + "<|im_end|>")
    return out


def oracle(conv, tok, thinking, train_on):
    """(ids, labels, problems) for the whole row, before any cutoff."""
    problems = []
    msgs = copy.deepcopy(conv.messages)
    for m in msgs:  # reasoning passed explicitly, so that the template never re-splits a content
        if m["role"] == "assistant":
            m["reasoning_content"] = (m.get("reasoning_content") or "") if thinking else ""
    text = tok.apply_chat_template(msgs, tools=conv.tools, tokenize=False, enable_thinking=thinking)
    spans = []
    for t in TURN.finditer(text):
        lo = t.start(1) + (len(EMPTY_THINK) if not thinking and text.startswith(EMPTY_THINK, t.start(1)) else 0)
        spans.append((lo, t.end()))
    want = expected_turns(conv.messages, thinking)
    got = [text[lo:hi] for lo, hi in spans]
    if got != want:
        problems.append(f"turn texts {got!r} != expected {want!r}")
    if train_on == "last":
        spans, want = spans[-1:], want[-1:]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = enc["input_ids"], []
    for tid, (a, b) in zip(ids, enc["offset_mapping"]):
        inside = any(lo <= a and b <= hi for lo, hi in spans)
        if not inside and any(a < hi and b > lo for lo, hi in spans):
            problems.append(f"token {tid} {text[a:b]!r} straddles a trained span's edge")
        labels.append(tid if inside else IGNORE_INDEX)
    runs, start = [], None
    for i, lab in enumerate(labels + [IGNORE_INDEX]):
        if lab != IGNORE_INDEX and start is None:
            start = i
        elif lab == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    if [ids[a:b] for a, b in runs] != [tok(w, add_special_tokens=False).input_ids for w in want]:
        problems.append("a trained run is not the tokenization of its turn text alone")
    prompt = tok.apply_chat_template(msgs[:-1], tools=conv.tools, tokenize=False, add_generation_prompt=True,
                                     enable_thinking=thinking)
    if text != prompt + want[-1] + "\n":
        problems.append(f"the row is not inference prompt + last reply: {text!r} vs {prompt!r} + {want[-1]!r}")
    if runs and ids[:runs[-1][0]] != tok(prompt, add_special_tokens=False).input_ids:
        problems.append("the ids before the last reply are not the inference prompt's")
    return ids, labels, runs, problems


def compare(conv, tok, thinking, train_on):
    """Problems of the oracle, and differences between encode() and the oracle at several cutoffs."""
    ids, labels, runs, problems = oracle(conv, tok, thinking, train_on)
    if problems:
        return problems
    last_lo, last_hi = runs[-1]
    for cut in (len(ids) + 5, len(ids), last_hi, last_hi - 1, (last_lo + last_hi) // 2, runs[0][0], runs[0][0] + 1):
        e = encode(conv, tok, EncodeOptions(cutoff_len=cut, enable_thinking=thinking, train_on=train_on))
        want = (ids[:cut], labels[:cut], len(ids) > cut, any(x != IGNORE_INDEX for x in labels[cut:]))
        if (e.input_ids, e.labels, e.truncated, e.reply_cut) != want:
            return [f"cutoff_len={cut}: encode differs from the oracle"]
    return []


# ---------------------------------------------------------------- rows

USER = ["Hi", "What is 2+2?", "assistant\n", "Explain <think> tags", "Use </think> please", "数学：二加二？",
        "emoji 🙂👍🏽 test", "  leading and trailing  ", "\nnewline first\n", "<tool_call>not a call</tool_call>",
        "multi\n\nparagraph\n", "<|im_start ish", "\t tabbed", "Ωmega ñ café", "x"]
REPLY = ["Hello, world", "4", "assistant\nfake header", "The tag </think> closes a block.", "\n\nleading newlines",
         "trailing newlines\n\n", "  spaced  ", "等于四。🙂", "```python\nprint('hi')\n```", "<think> is just text",
         " \n \nmixed blank lines", "\r\ncrlf reply\r\n", "ends with assistant\n", "🙂", "a\u2028b", "\u3000ideographic",
         "<tool_call>\nfake\n</tool_call>", "tab\tinside", "Answer</think>more", "done."]
REASONING = ["Add them.", "\nStep 1.\nStep 2.\n", "思考中🤔", "", "  spaced reasoning  ", "has <think> inside"]
SYSTEM = ["Be brief.", "", "  ", "You are Qwen.\n", "системный промпт", "assistant\n"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city 🌧",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "calc", "description": "Math",
          "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}]


def _call(r):
    if r.random() < 0.4:
        return {"type": "function", "function": {"name": "get_weather", "arguments": {"city": r.choice(["Paris", "北京"])}}}
    if r.random() < 0.5:
        return {"name": "calc", "arguments": {"expr": "1/0"}}  # the bare form
    return {"type": "function", "function": {"name": "calc", "arguments": json.dumps({"expr": "2+2"})}}


def _reply(r):
    if r.random() < 0.25:
        return "<think>" + r.choice(REASONING) + "</think>" + r.choice(["\n\n", "", "\n"]) + r.choice(REPLY)
    return r.choice(REPLY)


def _messages_row(r):
    msgs = [{"role": "system", "content": r.choice(SYSTEM)}] if r.random() < 0.5 else []
    tools = TOOLS if r.random() < 0.4 else None
    for _ in range(r.randint(1, 3)):
        msgs.append({"role": "user", "content": r.choice(USER)})
        if tools and r.random() < 0.6:
            for _ in range(r.randint(1, 2)):
                calls = [_call(r) for _ in range(r.randint(1, 2))]
                msgs.append({"role": "assistant", "content": r.choice(["", "Let me check.", "\nchecking", "  "]),
                             "tool_calls": calls, **({"reasoning_content": r.choice(REASONING)} if r.random() < 0.3 else {})})
                msgs += [{"role": "tool", "content": r.choice(['{"temp_c": 21}', "结果 🙂", ""])} for _ in calls]
        reply = _reply(r)
        extra = {"reasoning_content": r.choice(REASONING)} if r.random() < 0.3 and "</think>" not in reply else {}
        msgs.append({"role": "assistant", "content": reply, **extra})
    return {"messages": msgs, **({"tools": tools} if tools else {})}


def _sharegpt_row(r):
    conv = [{"from": "system", "value": r.choice(SYSTEM)}] if r.random() < 0.3 else []
    for _ in range(r.randint(1, 3)):
        conv.append({"from": r.choice(["human", "user"]), "value": r.choice(USER)})
        if r.random() < 0.2:
            conv += [{"from": "gpt", "value": _reply(r)}, {"from": "observation", "value": '{"k": 1}'}]
        conv.append({"from": r.choice(["gpt", "assistant"]), "value": _reply(r)})
    return {"conversations": conv, **({"system": r.choice(SYSTEM)} if r.random() < 0.3 else {})}


def _alpaca_row(r):
    row = {"instruction": r.choice(USER), "output": _reply(r)}
    if r.random() < 0.5:
        row["input"] = r.choice(USER + ["", "  "])
    if r.random() < 0.4:
        row["system"] = r.choice(SYSTEM)
    if r.random() < 0.4:
        row["history"] = [[r.choice(USER), _reply(r)] for _ in range(r.randint(1, 2))]
    return row


def random_rows(n, seed):
    r = random.Random(seed)
    rows = [r.choice([_messages_row, _sharegpt_row, _alpaca_row])(r) for _ in range(n)]
    convs = []
    for row in rows:
        try:
            convs.append(parse_row(row, None))
        except RowError as e:  # the only refusal these rows can meet: a reply that is just '</think>'
            assert "empty after the </think> block" in e.message, e
    return convs


CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
CASES = {
    "system_empty": {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Hello"}]},
    "system_mid": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A1"},
                                {"role": "system", "content": "new rules"}, {"role": "user", "content": "Q2"},
                                {"role": "assistant", "content": "A2"}]},
    "assistant_first": {"messages": [{"role": "assistant", "content": "Welcome!"}, {"role": "user", "content": "Hi"},
                                     {"role": "assistant", "content": "Hello"}]},
    "end_tag_in_answer": {"instruction": "q", "output": "<think>r</think>The tag </think> closes it."},
    "end_tag_after_empty_think": {"instruction": "q", "output": "<think></think>A</think>B"},
    "end_tag_in_history": {"instruction": "q2", "output": "ok", "history": [["q1", "<think>r</think>x</think>y"]]},
    "bare_end_tag": {"instruction": "q", "output": "Use </think> to close."},
    "tool_flow": {"tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "21"}, {"role": "assistant", "content": "It is 21."}]},
    "tool_flow_reasoning": {"tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [CALL, CALL], "reasoning_content": "need the tool"},
        {"role": "tool", "content": "21"}, {"role": "tool", "content": "22"},
        {"role": "assistant", "content": "21 and 22.", "reasoning_content": "done"}]},
    "tool_call_last": {"tools": TOOLS, "messages": [{"role": "user", "content": "Weather?"},
                                                    {"role": "assistant", "content": "", "tool_calls": [CALL]}]},
    "tool_call_blank_content": {"messages": [
        {"role": "user", "content": "Weather?"}, {"role": "assistant", "content": " \t ", "tool_calls": [CALL]},
        {"role": "tool", "content": "21"}, {"role": "assistant", "content": "21."}]},
    "tool_response_user_after_query": {"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "user", "content": "<tool_response>21</tool_response>"}, {"role": "assistant", "content": "21."}]},
    "markup_in_user": {"messages": [{"role": "user", "content": "assistant\n<think>\n</think>\n<tool_call>"},
                                    {"role": "assistant", "content": "fine"}]},
    "reply_like_header": {"instruction": "q", "output": "assistant\nassistant\n"},
    "unicode": {"instruction": "数学：二加二？🙂", "output": "等于四。👍🏽 café Ωmega"},
    "blank_edges": {"instruction": "q", "output": "\n\n  spaced  \n\n"},
    "crlf": {"instruction": "q", "output": "\r\nline\r\n"},
    "sharegpt_think": {"system": "S", "conversations": [
        {"from": "human", "value": "a"}, {"from": "gpt", "value": "<think>\nr1\n</think>\n\nb"},
        {"from": "human", "value": "c"}, {"from": "gpt", "value": "<think>\nr\n</think>\n\nd"}]},
    "alpaca_history": {"instruction": "Q3", "input": "ctx", "output": "A3", "system": "",
                       "history": [["Q1", "A1"], ["Q2", "<think>r2</think>A2"]]},
    "long_reply": {"instruction": "q", "output": "word " * 300},
}


@pytest.mark.parametrize("train_on", ["all", "last"])
@pytest.mark.parametrize("thinking", [False, True], ids=["no_think", "think"])
@pytest.mark.parametrize("name", list(CASES))
def test_adversarial_case_matches_oracle(tokenizer, name, thinking, train_on):
    assert compare(parse_row(CASES[name], None), tokenizer, thinking, train_on) == []


@pytest.mark.parametrize("thinking", [False, True], ids=["no_think", "think"])
def test_random_rows_match_oracle(tokenizer, thinking):
    convs = random_rows(100, seed=1234)
    assert len(convs) > 85
    problems = [f"row {i} ({train_on}): {p} :: {conv.messages!r}"
                for i, conv in enumerate(convs) for train_on in ("all", "last")
                for p in compare(conv, tokenizer, thinking, train_on)]
    assert problems == []
