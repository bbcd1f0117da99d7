"""Fuzz (hypothesis) over the data readers and the config / override parser, through the CLI entry point
in-process: whatever the input, a command ends with exit code 0, or exit code 2 and an 'error: ' message; never a
traceback (any other exception fails the test). What prepare writes, prepare reads back.

CI runs a small budget (a few seconds); QWEN_SFT_FUZZ_EXAMPLES=N runs N random examples per test (the count of a
long run by hand is in docs/design.md)."""

import contextlib
import io
import json
import os
import tempfile
import typing
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qwen_sft import config as config_mod
from qwen_sft.cli import main

LONG = os.environ.get("QWEN_SFT_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(LONG or 40), deadline=None, database=None, derandomize=not LONG,
                suppress_health_check=list(HealthCheck))

KEYS = ["instruction", "input", "output", "system", "history", "messages", "role", "content", "conversations", "from",
        "value", "tools", "tool_calls", "reasoning_content", "weight", "name", "arguments", "function", "type", "data"]
WORDS = ["user", "assistant", "system", "tool", "human", "gpt", "observation", "q", "a", "", " ", "<think>x</think>y",
         "<|im_end|>", "\ud83d", "caf\u00e9", "\u4f60\u597d", "0", "1"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30, max_value=10**40),
                    st.floats(), st.sampled_from(WORDS), st.text(max_size=12),
                    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                           max_leaves=25)
texts = st.one_of(st.text(max_size=10), st.sampled_from(WORDS))
anything = st.one_of(texts, scalars, json_values)
turns = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "bot"]), "content": texts},
    optional={
        "weight": st.sampled_from([0, 1, 2, True, None]),
        "reasoning_content": anything,
        "tool_calls": anything,
        "name": anything,
        "extra": anything,
    },
)
sharegpt_turns = st.fixed_dictionaries(
    {"from": st.sampled_from(["human", "gpt", "system", "observation"]), "value": texts},
    optional={"weight": st.sampled_from([0, 1, "1"]), "markdown": anything},
)
rows = st.one_of(  # rows of each format that are often valid, with any field possibly wrong
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6),
    st.fixed_dictionaries({"instruction": texts, "output": texts}, optional={"input": anything, "system": anything,
                                                                             "history": anything}),
    st.fixed_dictionaries({"messages": st.lists(turns, min_size=1, max_size=4)}, optional={"tools": anything}),
    st.fixed_dictionaries({"conversations": st.lists(sharegpt_turns, min_size=1, max_size=4)},
                          optional={"system": anything}),
)


@st.composite
def data_files(draw) -> tuple[str, bytes]:
    """(suffix, bytes): JSON rows as JSONL / a JSON array, mutated; deep nesting; long numbers; CSV; raw bytes."""
    kind = draw(st.sampled_from(["jsonl", "json", "deep", "number", "csv", "bytes"]))
    if kind in ("jsonl", "json"):
        items = draw(st.lists(st.one_of(rows, json_values), min_size=1, max_size=4))
        text = "\n".join(json.dumps(r) for r in items) if kind == "jsonl" else json.dumps(items)
        data = text.encode()
        if draw(st.booleans()):  # cut it, or append junk
            cut = draw(st.integers(0, len(data)))
            data = data[:cut] + draw(st.binary(max_size=8))
    elif kind == "deep":
        n = draw(st.sampled_from([63, 64, 65, 1000, 100_000]))
        inner = draw(st.sampled_from(["[" * n + "]" * n, "{\"messages\": " + "[" * n + "]" * n + "}", "[" * n]))
        data = inner.encode()
    elif kind == "number":
        data = ('{"instruction": "q", "output": "a", "n": ' + "9" * draw(st.integers(4000, 5000)) + "}").encode()
    elif kind == "csv":
        cells = st.text(alphabet=',"\n\r\tqa\x00\u00e9', max_size=10)
        header = draw(
            st.lists(st.sampled_from(["instruction", "output", "input", "system", "x", ""]), min_size=1, max_size=4)
        )
        body = draw(st.lists(st.lists(cells, max_size=5), max_size=4))
        data = "\n".join(",".join(r) for r in [header] + body).encode()
    else:
        data = draw(st.binary(max_size=64))
    own = kind if kind in ("jsonl", "json", "csv") else "jsonl"
    suffix = draw(st.sampled_from([own, own, own, "jsonl", "json", "csv", "tsv", "txt"]))
    return suffix, data


def run(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as e:  # argparse's own errors: exit 2 with a usage line
            code = e.code
    return code, err.getvalue()


def check_outcome(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert "error: " in err


@FUZZ
@given(data_files(), st.sampled_from([None, None, None, "alpaca", "messages", "sharegpt", "jsonl", "json", "csv"]),
       st.booleans())
def test_prepare_never_tracebacks_and_reads_back_what_it_writes(file, fmt, skip):
    suffix, data = file
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / f"data.{suffix}", Path(tmp) / "out.jsonl"
        src.write_bytes(data)
        args = ["prepare", "--input", str(src), "--output", str(out)] + (["--format", fmt] if fmt else []) \
            + (["--skip_invalid"] if skip else [])
        code, err = run(args)
        check_outcome(code, err)
        event(f"prepare exit {code}")
        if code == 0:
            again = run(["prepare", "--input", str(out), "--output", str(Path(tmp) / "again.jsonl")])
            assert again[0] == 0, again[1]
            assert (Path(tmp) / "again.jsonl").read_bytes() == out.read_bytes()


HINTS = typing.get_type_hints(config_mod.TrainConfig)
FIELDS = sorted(HINTS)
TEXT_KEYS = [k for k, h in HINTS.items() if h is str]
values = st.one_of(
    st.sampled_from(
        [
            "1.10",
            "010",
            "12:30",
            "on",
            "null",
            "~",
            "x #1",
            "@exp",
            "[q_proj",
            "a,b",
            "[]",
            "1e400",
            "nan",
            "-1",
            "0",
            "true",
            "auto",
            "",
            " ",
            "{a: 1}",
            "*a",
            "&a x",
            "\ud83d",
            "9" * 30,
        ]
    ),
    st.text(max_size=12),
)


@st.composite
def yaml_configs(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.one_of(st.sampled_from(FIELDS), st.sampled_from(["1", "[x]", "? a", "<<", "lr", "- a"])))
        lines.append(f"{key}: {draw(values)}")
    if draw(st.booleans()):
        lines.append(draw(st.text(max_size=20)))
    return "\n".join(lines)


@FUZZ
@given(yaml_configs(), st.lists(st.tuples(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), values), max_size=4))
def test_config_and_overrides_never_traceback_and_text_stays_literal(yaml_text, overrides):
    seen = []
    with tempfile.TemporaryDirectory() as tmp, mock.patch("qwen_sft.train.train", lambda cfg, **_: seen.append(cfg)):
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml_text, encoding="utf-8", errors="surrogatepass")
        items = [f"{k}={v}" for k, v in overrides]
        code, err = run(["train", str(path), *items])
        check_outcome(code, err)
        event(f"train exit {code}")
        if code == 0:
            (cfg,) = seen
            last = dict(overrides)  # the last override of a key wins
            for key, value in last.items():
                if key.strip() in TEXT_KEYS and key == key.strip():
                    assert getattr(cfg, key) == value, (key, value)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(TEXT_KEYS), st.one_of(values, st.text(min_size=1, max_size=16))), min_size=1,
                max_size=3))
def test_text_overrides_are_taken_literally(overrides):
    """Only text keys, any text: accepted as written (or refused in one line, e.g. an empty path)."""
    seen = []
    with mock.patch("qwen_sft.train.train", lambda cfg, **_: seen.append(cfg)):
        code, err = run(["train", *[f"{k}={v}" for k, v in overrides]])
    check_outcome(code, err)
    event(f"train exit {code}")
    if code == 0:
        for key, value in dict(overrides).items():
            assert getattr(seen[0], key) == value, (key, value)
