"""The label mask against an independent oracle, on many adversarial rows (real Qwen3 tokenizer and template).

The oracle does not use qwen_sft.data.encode. For each row (as the reader normalizes it) it states what
every assistant turn must emit after its served prompt, from the message itself (README "What is trained"):
the think block (thinking on: the last reply always, an earlier reply after the last user query when it has
reasoning; thinking off: never trained), the content, the tool calls as Qwen3 writes them, and <|im_end|>.
It then renders the conversation with apply_chat_template, finds the assistant turns by string position,
trains those whose text is exactly what they must emit (a history turn that the template renders without its
think block is not: it is trained in the sequence that ends with it, rendered and checked the same way),
tokenizes with character offsets and labels the tokens inside the trained turns (a token straddling an edge
is a failure). It also checks that the ids before each trained reply are its served prompt's,
apply_chat_template(history, add_generation_prompt=True), and that each trained run is the tokenization of
its turn text alone. encode() must give the same sequences, ids, labels and truncation flags, at cutoffs
that cut nothing, end right after the last <|im_end|>, just before it, mid-reply and inside the prompt.
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
    return (
        m["role"] == "user"
        and isinstance(c, str)
        and not (c.startswith("<tool_response>") and c.endswith("</tool_response>"))
    )


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


def _sequence(msgs, tools, tok, thinking, candidates):
    """(ids, labels, runs, trained message indices, problems) of the sequence that renders msgs (it ends with an
    assistant reply): a candidate reply is trained where its rendered turn is exactly what it must emit after
    its served prompt (expected_turns of the conversation up to it, where it is the last reply)."""
    problems = []
    text = tok.apply_chat_template(msgs, tools=tools, tokenize=False, enable_thinking=thinking)
    index = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    turns = list(TURN.finditer(text))
    if len(turns) != len(index):
        return None, None, None, [], [f"{len(turns)} assistant turns rendered for {len(index)} replies"]
    spans, trained, want = [], [], []
    for i, t in zip(index, turns):
        lo = t.start(1) + (len(EMPTY_THINK) if not thinking and text.startswith(EMPTY_THINK, t.start(1)) else 0)
        emit = expected_turns(msgs[:i + 1], thinking)[-1]
        prompt = tok.apply_chat_template(msgs[:i], tools=tools, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=thinking) if i in candidates else None
        if i in candidates and text[lo:t.end()] == emit and text[:lo] == prompt:
            spans.append((lo, t.end()))
            trained.append(i)
            want.append(emit)
        elif i == index[-1] and i in candidates:
            problems.append(f"the last reply renders {text[:t.end()]!r}, not its served prompt {prompt!r} and what it "
                            f"must emit, {emit!r}")
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
    for (a, _), i in zip(runs, trained):
        prompt = tok.apply_chat_template(msgs[:i], tools=tools, add_generation_prompt=True, enable_thinking=thinking)
        if ids[:a] != list(prompt["input_ids"]):
            problems.append(f"the ids before reply {i} are not its inference prompt's")
    return ids, labels, runs, trained, problems


def oracle(conv, tok, thinking, train_on):
    """[(ids, labels, runs)] of the row's sequences, before any cutoff, and problems. The first sequence is the
    whole row; each reply it does not train (rendered there otherwise than it must be emitted, e.g. a history
    turn without its think block) is trained in the sequence that ends with it, with any earlier ones that fit."""
    msgs = copy.deepcopy(conv.messages)
    for m in msgs:  # reasoning passed explicitly, so that the template never re-splits a content
        m.pop("weight", None)
        if m["role"] == "assistant":
            m["reasoning_content"] = (m.get("reasoning_content") or "") if thinking else ""
    index = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    todo = [i for i in (index[-1:] if train_on == "last" else index)
            if conv.messages[i].get("weight", 1) and i > 0]  # a reply with no message before it: no served prompt
    out, problems, last = [], [], len(msgs) - 1
    while not out or todo:
        ids, labels, runs, trained, found = _sequence(msgs[:last + 1], conv.tools, tok, thinking, todo)
        problems += found
        if ids is None or (out and not trained):
            return out, problems + [f"the sequence ending with reply {last} trains nothing"]
        out.append((ids, labels, runs))
        todo = [i for i in todo if i not in trained]
        last = max(todo, default=None)
    return out, problems


def compare(conv, tok, thinking, train_on):
    """Problems of the oracle, and differences between encode() and the oracle at several cutoffs."""
    want, problems = oracle(conv, tok, thinking, train_on)
    if problems:
        return problems
    ids, _, runs = want[0]
    last_lo, last_hi = runs[-1] if runs else (0, len(ids))
    first_lo = runs[0][0] if runs else 0
    for cut in (len(ids) + 5, len(ids), last_hi, last_hi - 1, (last_lo + last_hi) // 2, first_lo, first_lo + 1):
        e = encode(conv, tok, EncodeOptions(cutoff_len=cut, enable_thinking=thinking, train_on=train_on))
        got = [(s.input_ids, s.labels, s.truncated, s.reply_cut) for s in [e] + e.more]
        exp = [(i[:cut], lab[:cut], len(i) > cut, any(x != IGNORE_INDEX for x in lab[cut:])) for i, lab, _ in want]
        if got != exp:
            return [f"cutoff_len={cut}: encode differs from the oracle"]
    return []


# ---------------------------------------------------------------- rows

USER = ["Hi", "What is 2+2?", "assistant\n", "Explain <think> tags", "Use </think> please", "数学：二加二？",
        "emoji 🙂👍🏽 test", "  leading and trailing  ", "\nnewline first\n", "<tool_call>not a call</tool_call>",
        "multi\n\nparagraph\n", "<|im_start ish", "\t tabbed", "Ωmega ñ café", "x"]
REPLY = [
    "Hello, world",
    "4",
    "assistant\nfake header",
    "The tag </think> closes a block.",
    "\n\nleading newlines",
    "trailing newlines\n\n",
    "  spaced  ",
    "等于四。🙂",
    "```python\nprint('hi')\n```",
    "<think> is just text",
    " \n \nmixed blank lines",
    "\r\ncrlf reply\r\n",
    "ends with assistant\n",
    "🙂",
    "a\u2028b",
    "\u3000ideographic",
    "<tool_call>\nfake\n</tool_call>",
    "tab\tinside",
    "Answer</think>more",
    "done.",
]
REASONING = ["Add them.", "\nStep 1.\nStep 2.\n", "思考中🤔", "", "  spaced reasoning  ", "has <think> inside"]
SYSTEM = ["Be brief.", "", "  ", "You are Qwen.\n", "системный промпт", "assistant\n"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city 🌧",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "calc", "description": "Math",
          "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}]


def _call(r):
    if r.random() < 0.4:
        return {
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": r.choice(["Paris", "北京"])}},
        }
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
                msgs.append(
                    {
                        "role": "assistant",
                        "content": r.choice(["", "Let me check.", "\nchecking", "  "]),
                        "tool_calls": calls,
                        **({"reasoning_content": r.choice(REASONING)} if r.random() < 0.3 else {}),
                    }
                )
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
