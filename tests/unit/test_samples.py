"""Synthetic sample rows: they parse, they are varied, deterministic, and their computed answers are right."""

from __future__ import annotations

import json
import re

import pytest

from qwen_sft.data.formats import parse_row
from qwen_sft.samples import DEMO_PAIRS, demo_rows, generate_samples

CJK = re.compile(r"[\u4e00-\u9fff]")


def _key(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _exchanges(rows):
    """(user text, assistant reply) for every assistant turn of every row that answers a user (a tool-call turn's
    reply is its call: tool-call rows are checked by test_tool_call_rows)."""
    for row in rows:
        msgs = parse_row(row, None).messages
        for prev, msg in zip(msgs, msgs[1:]):
            if msg["role"] == "assistant" and prev["role"] == "user" and not msg.get("tool_calls"):
                yield prev["content"], msg["content"]


@pytest.fixture(scope="module")
def rows2000():
    return generate_samples(2000, seed=0)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_row_parses(seed):
    rows = generate_samples(400, seed=seed)
    assert len(rows) == 400
    for row in rows:
        conv = parse_row(row, None)
        assert conv.format in ("alpaca", "messages")
        assert conv.messages[-1]["role"] == "assistant" and conv.messages[-1]["content"].strip()


def test_mix_present_in_200():
    rows = generate_samples(200, seed=3)
    convs = [parse_row(r, None) for r in rows]
    n = len(rows)
    alpaca = sum(c.format == "alpaca" for c in convs)
    messages = sum(c.format == "messages" for c in convs)
    zh = sum(bool(CJK.search(next(m["content"] for m in c.messages if m["role"] == "user"))) for c in convs)
    multi = sum(sum(m["role"] == "user" for m in c.messages) > 1 for c in convs)
    system = sum(c.messages[0]["role"] == "system" for c in convs)
    reasoning = sum(c.has_reasoning for c in convs)
    context = sum(bool(r.get("input", "").strip()) for r in rows)
    history = sum(bool(r.get("history")) for r in rows)
    multi_messages = sum(c.format == "messages" and sum(m["role"] == "user" for m in c.messages) > 1 for c in convs)
    system_alpaca = sum("system" in r for r in rows)
    for name, count in [("alpaca", alpaca), ("messages", messages), ("multi-turn", multi), ("system", system),
                        ("reasoning", reasoning), ("input context", context), ("history", history),
                        ("multi-turn messages", multi_messages), ("alpaca system", system_alpaca)]:
        assert count > 0, f"no {name} rows in {n}"
    assert 0.3 * n < zh < 0.7 * n, f"{zh} of {n} rows are Chinese"
    assert 0.3 * n < alpaca < 0.7 * n
    # reasoning rides on messages rows, on the last assistant turn only
    for c in convs:
        if c.has_reasoning:
            assert c.format == "messages"
            assert [m for m in c.messages if m.get("reasoning_content")] == [c.messages[-1]]


def test_domains_present_in_200():
    text = "\n".join(_key(r) for r in generate_samples(200, seed=5))
    for marker in ["```python", "```sql", "revenue", "营业收入", "Translate", "翻译", "x = ", "capital"]:
        assert marker in text, marker


def test_mostly_unique_at_1000():
    rows = generate_samples(1000, seed=0)
    assert len({_key(r) for r in rows}) >= 950
    # and not a handful of templates: the user requests themselves are varied
    firsts = {next(m["content"] for m in parse_row(r, None).messages if m["role"] == "user") for r in rows}
    assert len(firsts) >= 800


def test_deterministic_per_seed():
    assert generate_samples(300, seed=11) == generate_samples(300, seed=11)
    assert generate_samples(300, seed=11) != generate_samples(300, seed=12)
    assert generate_samples(0) == []
    with pytest.raises(ValueError):
        generate_samples(-1)


def test_replies_reasonably_short(rows2000):
    lengths = sorted(len(a) for _, a in _exchanges(rows2000))
    assert lengths[len(lengths) // 2] < 300
    assert lengths[int(len(lengths) * 0.95)] < 800
    assert lengths[0] >= 2


EXPR_Q = re.compile(
    r"(?:What is |Calculate |Compute |Evaluate: |What is the value of |计算 |请算一下 |求值：)?"
    r"([0-9][0-9()+\-×÷ ]*[0-9)])(?:\?|\.|。| = \?| 等于多少？| 的结果是多少？)?"
)


def test_arithmetic_answers_are_correct(rows2000):
    checked = 0
    for q, a in _exchanges(rows2000):
        m = EXPR_Q.fullmatch(q)
        if not m or not re.search(r"[+\-×÷]", m.group(1)):
            continue
        value = eval(m.group(1).replace("×", "*").replace("÷", "/"), {"__builtins__": {}})  # digits/ops/parens only
        assert value == int(value), q
        assert re.search(rf"(?:=|is|是) {int(value)}(?!\d|\.\d|,\d)", a), (q, a)
        checked += 1
    assert checked >= 30


EQ_Q = re.compile(r"(?:Solve for x: |Find x if |解方程：|求 x：)(\d+)x ([+-]) (\d+) = (-?\d+)\.?")


def test_equation_answers_are_correct(rows2000):
    checked = 0
    for q, a in _exchanges(rows2000):
        m = EQ_Q.fullmatch(q)
        if not m:
            continue
        k, sign, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        b = b if sign == "+" else -b
        assert (c - b) % k == 0, q
        assert f"x = {(c - b) // k}" in a.rsplit("\n", 1)[-1], (q, a)
        checked += 1
    assert checked >= 10


def _f(s: str) -> float:
    return float(s.replace(",", ""))


def test_finance_answers_are_correct(rows2000):
    growth = loans = 0
    for q, a in _exchanges(rows2000):
        if a.startswith(("Growth rate = ", "增长率 = ")):
            unit = r"\$([\d,.]+) million" if a.startswith("Growth") else r"([\d,.]+)亿元"
            old, new = (_f(x) for x in re.findall(unit, q)[:2])
            assert f"{abs((new - old) / old * 100):.2f}%" in a, (q, a)
            growth += 1
        m = re.search(r"\$([\d,]+) (?:mortgage|car loan) at ([\d.]+)% APR over (\d+) years", q) or \
            re.search(r"(\d+)-year (?:mortgage|car loan) of \$([\d,]+) at ([\d.]+)% a year", q)
        if m:
            p, rate, years = ((_f(m.group(1)), _f(m.group(2)), int(m.group(3))) if q.startswith("What")
                              else (_f(m.group(2)), _f(m.group(3)), int(m.group(1))))
            i, n = rate / 1200, years * 12
            pay = p * i / (1 - (1 + i) ** -n)
            assert f"${pay:,.2f}" in a, (q, a)
            loans += 1
    assert growth >= 10 and loans >= 3


def test_code_output_answers_match_python(rows2000):
    checked = 0
    for q, a in _exchanges(rows2000):
        m = re.search(r"```python\n(.*?)\n```", q, re.S)
        if not m or not a.startswith(("It prints", "输出")):
            continue
        code = m.group(1)
        lines: list[str] = []
        eval_print = {"print": lambda *args, out=lines: out.append(" ".join(map(str, args)))}
        exec(code, {"__builtins__": {"sum": sum, "len": len, "range": range}, **eval_print})  # generated snippets only
        out = re.search(r"```\n(.*?)\n```", a, re.S).group(1)
        assert out == "\n".join(lines), (code, a)
        checked += 1
    assert checked >= 10


def test_demo_pairs():
    assert len(DEMO_PAIRS) == 8
    en = [p for p in DEMO_PAIRS if not CJK.search(p[0])]
    zh = [p for p in DEMO_PAIRS if CJK.search(p[0])]
    assert len(en) == 4 and len(zh) == 4
    assert len({q.split()[0] for q, _ in en}) == 4
    assert len({q[0] for q, _ in zh}) == 4
    for _, ans in en:
        assert 3 <= len(ans.split()) <= 12, ans
    for _, ans in zh:
        assert 3 <= len(ans.rstrip("。")) <= 24, ans
    assert len({a for _, a in DEMO_PAIRS}) == 8
    rows = demo_rows()
    assert [(r["instruction"], r["output"]) for r in rows] == DEMO_PAIRS
    for row in rows:
        conv = parse_row(row, None)
        assert conv.format == "alpaca" and [m["role"] for m in conv.messages] == ["user", "assistant"]


def test_tool_call_rows(rows2000):
    # #22: the sample data includes tool-calling conversations: offered tools, calls (one, two in a turn, two
    # steps; arguments as an object or a JSON string), results, and an answer computed from the results.
    tool_rows = [r for r in rows2000 if "tools" in r]
    assert 0.05 * len(rows2000) < len(tool_rows) < 0.15 * len(rows2000)
    shapes, string_args = set(), 0
    for row in tool_rows:
        conv = parse_row(row, None)
        offered = {t["function"]["name"] for t in conv.tools}
        calls = [m["tool_calls"] for m in conv.messages if m.get("tool_calls")]
        shapes.add((len(calls), max(len(c) for c in calls)))
        string_args += sum(
            isinstance(c["function"]["arguments"], str) for m in row["messages"] for c in m.get("tool_calls", [])
        )
        results = [json.loads(m["content"]) for m in conv.messages if m["role"] == "tool"]
        assert len(results) == sum(len(c) for c in calls)
        for call in (c for turn in calls for c in turn):
            assert call["function"]["name"] in offered and isinstance(call["function"]["arguments"], dict)
        assert conv.messages[-1]["role"] == "assistant" and not conv.messages[-1].get("tool_calls")
        for r in results:  # the answer uses what the tools returned
            if "rate" in r and r["quote"] in conv.messages[-1]["content"] and "x" not in conv.messages[-1]["content"]:
                assert str(r["rate"]) in conv.messages[-1]["content"]
            if "monthly_payment" in r:
                assert f"{r['monthly_payment']:,.2f}" in conv.messages[-1]["content"]
    assert {(1, 1), (1, 2), (2, 1)} <= shapes and string_args > 0
    reasoned = [r for r in generate_samples(300, seed=4, reasoning=True) if "tools" in r]
    assert reasoned and all(parse_row(r, None).messages[-1].get("reasoning_content") for r in reasoned)
