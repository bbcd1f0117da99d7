"""Readers (alpaca / messages / sharegpt; JSONL / JSON / CSV / TSV), their errors, and the data report."""

import json
from types import SimpleNamespace

import pytest

from qwen_sft.data.encode import Encoded
from qwen_sft.data.dataset import split_indices
from qwen_sft.data.formats import (
    ColumnMap, Conversation, LoadResult, detect_schema, load_dataset, parse_row, write_jsonl,
)
from qwen_sft.data.report import build_report, check_thresholds, enforce, format_report
from qwen_sft.errors import SKIP_HINT, DataError, UserError

FIX_HINT = SKIP_HINT


def write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def jsonl(path, *rows):
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))


def problems(spec, **kw):
    with pytest.raises(DataError) as info:
        load_dataset(spec, **kw)
    return info.value.problems


# ---------------------------------------------------------------- schemas


def test_alpaca_detected_and_parsed(tmp_path):
    path = jsonl(tmp_path / "a.jsonl",
                 {"instruction": "Hi", "output": "Hello"},
                 {"system": "Be brief.", "instruction": "Translate", "input": "Bonjour", "output": "Hello",
                  "history": [["Q1", "A1"]]},
                 {"instruction": "Hi", "input": "   ", "output": "Hello", "system": ""})
    res = load_dataset(path)
    a, b, c = res.conversations
    assert a.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert b.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Translate\n\nBonjour"}, {"role": "assistant", "content": "Hello"},
    ]
    assert c.messages == a.messages  # blank input and system are ignored
    assert [x.source for x in res.conversations] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert {x.format for x in res.conversations} == {"alpaca"}
    assert res.rows_per_format == {"alpaca": 3} and res.files == [str(path)] and res.invalid == []


def test_messages_with_reasoning_and_tools(tmp_path):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    call = [{"type": "function", "function": {"name": "f", "arguments": {}}}]
    row = {"tools": tools, "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": None, "tool_calls": call, "reasoning_content": "need f"},
        {"role": "tool", "content": ""},
        {"role": "assistant", "content": "<think>\nthink\n</think>\n\nDone."},
    ]}
    res = load_dataset(jsonl(tmp_path / "m.jsonl", row))
    (conv,) = res.conversations
    assert conv.format == "messages" and conv.tools == tools and conv.has_reasoning
    assert conv.messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "", "reasoning_content": "need f", "tool_calls": call},
        {"role": "tool", "content": ""},
        {"role": "assistant", "content": "Done.", "reasoning_content": "think"},
    ]
    assert conv.to_json() == {"messages": conv.messages, "tools": tools}


def test_sharegpt_roles(tmp_path):
    row = {"system": "Sys", "conversations": [
        {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"},
        {"from": "observation", "value": "obs"}, {"from": "system", "value": ""},
        {"from": "user", "value": "Q2"}, {"from": "assistant", "value": "A2"},
    ]}
    (conv,) = load_dataset(jsonl(tmp_path / "s.jsonl", row)).conversations
    assert conv.format == "sharegpt"
    assert conv.messages == [
        {"role": "system", "content": "Sys"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
        {"role": "tool", "content": "obs"}, {"role": "system", "content": ""},
        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"},
    ]


def test_mixed_formats_in_one_file_are_counted(tmp_path):
    path = jsonl(tmp_path / "mix.jsonl",
                 {"instruction": "q", "output": "a"},
                 {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                 {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
                 "", "   ")  # blank lines are skipped
    res = load_dataset(path)
    assert res.rows_per_format == {"alpaca": 1, "messages": 1, "sharegpt": 1}
    assert [c.messages for c in res.conversations] == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]] * 3


def test_detect_schema():
    assert detect_schema({"messages": []}) == "messages"
    assert detect_schema({"conversations": []}) == "sharegpt"
    assert detect_schema({"output": "x"}) == "alpaca"


def test_forced_format(tmp_path):
    path = jsonl(tmp_path / "rows.txt", {"instruction": "q", "output": "a"})
    assert load_dataset(path, fmt="alpaca").conversations[0].format == "alpaca"
    assert load_dataset(path, fmt="jsonl").conversations[0].format == "alpaca"
    assert problems(path, fmt="sharegpt") == [f"{path}:1: conversations: expected a non-empty list"]
    with pytest.raises(UserError, match=r"unknown file type '\.txt'"):
        load_dataset(path)


def test_reply_leading_blank_lines_removed_like_the_template_does():
    conv = parse_row({"instruction": "q", "output": "a", "history": [["q0", "\n \nfirst"]]}, None)
    assert conv.messages[1]["content"] == "first"
    conv = parse_row({"instruction": "q", "output": "  indented code"}, None)
    assert conv.messages[1]["content"] == "  indented code"


# ---------------------------------------------------------------- containers and paths


def test_json_array_file(tmp_path):
    rows = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}]
    path = write(tmp_path / "d.json", json.dumps(rows, indent=2))
    res = load_dataset(path)
    assert [c.messages[1]["content"] for c in res.conversations] == ["a1", "a2"]
    assert [c.source for c in res.conversations] == [f"{path}:item 0", f"{path}:item 1"]
    wrapped = write(tmp_path / "w.json", json.dumps({"data": rows}))
    assert len(load_dataset(wrapped).conversations) == 2
    bad = write(tmp_path / "bad.json", json.dumps([rows[0], {"instruction": "q"}]))
    assert problems(bad) == [f"{bad}:item 1: output: missing"]


def test_json_file_errors(tmp_path):
    broken = write(tmp_path / "b.json", '[\n  {"instruction": "q", "output": "a"},\n  {"instruction" "q"}\n]')
    (p,) = problems(broken)
    assert p.startswith(f"{broken}:3: (file): malformed JSON: Expecting ':' delimiter")
    scalar = write(tmp_path / "s.json", '{"rows": []}')
    assert problems(scalar) == [f"{scalar}:1: (file): expected a JSON list of rows (or JSONL, one row per line)"]


def test_directory_of_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    jsonl(d / "b.jsonl", {"instruction": "qb", "output": "ab"})
    write(d / "a.csv", "instruction,output\nqa,aa\n")
    write(d / "c.json", json.dumps([{"instruction": "qc", "output": "ac"}]))
    write(d / "README.md", "not data")
    (d / "sub").mkdir()
    jsonl(d / "sub" / "z.jsonl", {"instruction": "qz", "output": "az"})
    res = load_dataset(d)
    assert res.files == [str(d / "a.csv"), str(d / "b.jsonl"), str(d / "c.json")]
    assert [c.messages[0]["content"] for c in res.conversations] == ["qa", "qb", "qc"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="directory holds no data files"):
        load_dataset(empty)


def test_list_of_paths(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", {"instruction": "q1", "output": "a1"})
    b = jsonl(tmp_path / "b.jsonl", {"instruction": "q2", "output": "a2"}, {"instruction": "q3", "output": "a3"})
    res = load_dataset([str(b), a])
    assert res.files == [str(b), str(a)]
    assert [c.source for c in res.conversations] == [f"{b}:1", f"{b}:2", f"{a}:1"]


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(UserError, match="nope.jsonl: dataset path does not exist") as info:
        load_dataset([str(jsonl(tmp_path / "ok.jsonl", {"instruction": "q", "output": "a"})), str(missing)])
    assert str(missing) in str(info.value)


def test_jsonl_with_bom_and_crlf(tmp_path):
    path = write(tmp_path / "w.jsonl", b'\xef\xbb\xbf{"instruction": "q1", "output": "a1"}\r\n{"instruction": "q2", "output": ""}\r\n')
    assert problems(path) == [f"{path}:2: output: empty"]
    path = write(tmp_path / "ok.jsonl", b'\xef\xbb\xbf{"instruction": "q1", "output": "a1"}\r\n')
    assert load_dataset(path).conversations[0].messages[1] == {"role": "assistant", "content": "a1"}


# ---------------------------------------------------------------- CSV / TSV


def test_csv_rfc4180_quoting(tmp_path):
    path = write(tmp_path / "d.csv",
                 'instruction,input,output\n'
                 '"Line one\nline two","a, b","He said ""hi"""\n'
                 'q2,,"multi\n\nline"\n'
                 'q3,,\n')
    with pytest.raises(DataError) as info:
        load_dataset(path)
    # Row 3 starts on physical line 7 (the records above span lines 2-3 and 4-6).
    assert info.value.problems == [f"{path}:7: output: empty"]
    res = load_dataset(path, skip_invalid=True)
    a, b = res.conversations
    assert a.messages == [{"role": "user", "content": "Line one\nline two\n\na, b"},
                          {"role": "assistant", "content": 'He said "hi"'}]
    assert b.messages[1]["content"] == "multi\n\nline" and b.source == f"{path}:4"
    assert res.invalid == [f"{path}:7: output: empty"]


def test_csv_bom_and_crlf(tmp_path):
    path = write(tmp_path / "win.csv",
                 b'\xef\xbb\xbfinstruction,output\r\nq1,"first\r\nsecond"\r\nq2,a2\r\n\r\nq3,\r\n')
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert info.value.problems == [f"{path}:6: output: empty"]  # the blank line 5 still counts
    a, b = load_dataset(path, skip_invalid=True).conversations
    assert a.messages == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "first\nsecond"}]
    assert b.messages == [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    assert (a.source, b.source) == (f"{path}:2", f"{path}:4")


def test_csv_blank_lines_keep_line_numbers(tmp_path):
    path = write(tmp_path / "d.csv", "instruction,output\nq1,a1\n\n\nq2,\n")
    assert problems(path) == [f"{path}:5: output: empty"]


def test_tsv(tmp_path):
    path = write(tmp_path / "d.tsv", 'instruction\toutput\tsystem\nq, with comma\t"a\tb"\tBe nice\n')
    (conv,) = load_dataset(path).conversations
    assert conv.messages == [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "q, with comma"},
                             {"role": "assistant", "content": "a\tb"}]
    assert conv.format == "alpaca"


def test_csv_custom_columns(tmp_path):
    path = write(tmp_path / "d.csv", "question,context,answer,persona,extra\nWhat?,ctx,This.,Pirate,ignored\n")
    cols = ColumnMap(instruction="question", input="context", output="answer", system="persona")
    (conv,) = load_dataset(path, columns=cols).conversations
    assert conv.messages == [{"role": "system", "content": "Pirate"}, {"role": "user", "content": "What?\n\nctx"},
                             {"role": "assistant", "content": "This."}]


def test_csv_with_only_a_question_column_is_refused(tmp_path):
    path = write(tmp_path / "q.csv", "question\nWhat is 2+2?\nWhy?\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, columns=ColumnMap(instruction="question"), skip_invalid=True)
    assert info.value.problems == [
        f"{path}:1: output: column not found (columns are ['question']); set --output_col to the column that holds it"]
    assert "--output_col" in str(info.value)
    # With default columns both are missing, each naming its flag.
    msgs = problems(path)
    assert [m.split(": ")[1] for m in msgs] == ["instruction", "output"]
    assert "--instruction_col" in msgs[0] and "--output_col" in msgs[1]


def test_csv_row_with_too_many_fields(tmp_path):
    path = write(tmp_path / "d.csv", "instruction,output\nq,a,extra\nq2,a2\n")
    assert problems(path) == [f"{path}:2: (row): 3 fields, header has 2"]


def test_csv_row_too_short_to_reach_a_needed_column(tmp_path):
    # 'q2,a2' under instruction,input,output would read a2 as the input and miss the output: name the cause.
    path = write(tmp_path / "d.csv", "instruction,input,output\nq1,,a1\nq2,a2\n")
    assert problems(path) == [f"{path}:3: (row): 2 fields, header has 3"]
    # A short row that still has the instruction and output cells only lacks an optional trailing one.
    path = write(tmp_path / "e.csv", "instruction,output,system\nq1,a1\n")
    assert load_dataset(str(path)).conversations[0].messages[-1]["content"] == "a1"


def test_csv_with_a_header_and_no_rows(tmp_path):
    path = write(tmp_path / "d.csv", "instruction,input,output\n\n")
    assert problems(path) == [f"{path}:2: (file): no rows after the header line"]


def test_csv_duplicate_column_is_refused(tmp_path):
    # Was: the last 'output' column silently won, the first was dropped.
    path = write(tmp_path / "d.csv", "instruction,output,output,notes,notes\nq,a1,a2,x,y\n")
    with pytest.raises(DataError) as info:
        load_dataset(path, skip_invalid=True)
    assert info.value.problems == [f"{path}:1: output: column appears 2 times in the header; rename all but one"]
    assert SKIP_HINT not in str(info.value)  # skip_invalid cannot drop a header problem
    # Unused columns may repeat.
    path = write(tmp_path / "ok.csv", "instruction,output,notes,notes\nq,a,x,y\n")
    assert load_dataset(path).conversations[0].messages[1]["content"] == "a"


def test_csv_unclosed_quote_is_refused(tmp_path):
    # Was: the open quote swallowed every following row into one reply, silently.
    path = write(tmp_path / "d.csv", 'instruction,output\nq0,a0\nq1,"a1\nq2,a2\nq3,a3\n')
    with pytest.raises(DataError) as info:
        load_dataset(path, skip_invalid=True)
    (p,) = info.value.problems
    assert p.startswith(f"{path}:3: (row): broken CSV quoting (unexpected end of data)") and "never closed" in p
    path = write(tmp_path / "e.csv", 'instruction,output\nq1,"a1" tail\n')
    (p,) = problems(path)
    assert p.startswith(f"{path}:2: (row): broken CSV quoting")


def test_csv_long_cell(tmp_path):
    # Was: a traceback (_csv.Error: field larger than field limit (131072)).
    path = write(tmp_path / "d.csv", 'instruction,output\nq,"' + "x" * 200_000 + '"\n')
    assert load_dataset(path).conversations[0].messages[1]["content"] == "x" * 200_000


def test_csv_renamed_optional_column_must_exist(tmp_path):
    # Was: a mistyped --input_col / --system_col was silently ignored and the context dropped.
    path = write(tmp_path / "d.csv", "question,context,answer\nq,ctx,a\n")
    cols = ColumnMap(instruction="question", input="contxt", output="answer")
    assert problems(path, columns=cols) == [
        f"{path}:1: contxt: column not found (columns are ['question', 'context', 'answer']); set --input_col to the column that holds it"]
    # The default names stay optional.
    (conv,) = load_dataset(path, columns=ColumnMap(instruction="question", output="answer")).conversations
    assert conv.messages[0]["content"] == "q"


def test_renamed_optional_column_is_needed_in_one_csv_of_the_dataset_not_all(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    write(d / "a.csv", "question,context,answer\nq,ctx,a\n")
    write(d / "b.csv", "question,answer\nq2,a2\n")  # rows without a context: legitimate
    cols = ColumnMap(instruction="question", input="context", output="answer")
    a, b = load_dataset(str(d), columns=cols).conversations
    assert a.messages[0]["content"] == "q\n\nctx" and b.messages[0]["content"] == "q2"
    # No file has it: a typo, named at the first CSV without it.
    assert problems(str(d), columns=ColumnMap(instruction="question", input="contxt", output="answer")) == [
        f"{d / 'a.csv'}:1: contxt: column not found (columns are ['question', 'context', 'answer']); set --input_col to the column that holds it"]


def test_json_rows_follow_column_renames(tmp_path):
    # Was: --*_col applied to CSV only; JSON rows lost the renamed field (or were refused as unknown).
    path = jsonl(tmp_path / "d.jsonl", {"question": "q", "context": "ctx", "answer": "a"}, {"question": "q2", "answer": "a2"})
    cols = ColumnMap(instruction="question", input="context", output="answer")
    a, b = load_dataset(path, columns=cols).conversations
    assert a.messages == [{"role": "user", "content": "q\n\nctx"}, {"role": "assistant", "content": "a"}]
    assert b.messages == [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    assert problems(path, columns=ColumnMap(instruction="question", input="contxt", output="answer")) == [
        f"{path}:1: contxt: no row has this field; set --input_col to the key that holds the input"]
    both = jsonl(tmp_path / "b.jsonl", {"instruction": "q", "question": "q?", "output": "a"})
    assert problems(both, columns=ColumnMap(instruction="question")) == [
        f"{both}:1: question: the row also has 'instruction'; --instruction_col question makes them the same field"]


def test_column_renames_for_a_csv_do_not_refuse_the_other_files_of_the_dataset(tmp_path):
    # Was: `prepare --input dir --instruction_col question --output_col answer` refused the directory's
    # messages JSONL (and an alpaca JSONL with the usual keys): "question: no row has this field".
    write(tmp_path / "qa.csv", "question,answer\nWhat is 2+2?,4\n")
    jsonl(tmp_path / "chat.jsonl", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    jsonl(tmp_path / "alpaca.jsonl", {"instruction": "q", "output": "a"})
    cols = ColumnMap(instruction="question", output="answer")
    loaded = load_dataset(tmp_path, columns=cols)
    assert sorted(c.messages[0]["content"] for c in loaded.conversations) == ["What is 2+2?", "hi", "q"]
    # A JSON file with renamed keys next to a messages file: the renamed keys are read, no refusal.
    other = tmp_path / "other"
    other.mkdir()
    jsonl(other / "chat.jsonl", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    jsonl(other / "qa.jsonl", {"question": "q", "answer": "a"})
    assert len(load_dataset(other, columns=cols).conversations) == 2
    # A typo is still named, once, even with other files around.
    assert problems(other, columns=ColumnMap(instruction="question", output="answr")) == [
        f"{other / 'qa.jsonl'}:1: answr: no row has this field; set --output_col to the key that holds the output"]


def test_utf16_file_is_named(tmp_path):
    for suffix in ("jsonl", "csv"):
        text = '{"instruction": "q", "output": "a"}\n' if suffix == "jsonl" else "instruction,output\nq,a\n"
        path = write(tmp_path / f"d.{suffix}", text.encode("utf-16"))
        assert problems(path) == [f"{path}:1: (file): UTF-16 text; save the file as UTF-8"]


def test_write_jsonl_interrupted_leaves_no_temp_file(tmp_path):
    class Boom:
        def to_json(self):
            raise KeyboardInterrupt

    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        write_jsonl([_conv("a"), Boom()], out)
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"] and out.read_text() == "old\n"


def test_csv_not_utf8(tmp_path):
    path = write(tmp_path / "d.csv", b"instruction,output\nq,a\nq\xe9,a\n")
    assert problems(path) == [f"{path}:3: (file): not valid UTF-8 (byte 0xe9); save the file as UTF-8"]


# ---------------------------------------------------------------- bad rows


NO_QUERY = ("{}: no user query (only system, tool or '<tool_response>' turns): Qwen3's chat template renders "
            "such a reply without the think block that every served prompt has; add the user's question")

BAD_ROWS = [
    ('{"instruction": "q", "output": "a"', "(line): malformed JSON: Expecting ',' delimiter at column 35"),
    ({"instruction": "q"}, "output: missing"),
    ({"output": "a"}, "instruction: missing"),
    ({"instruction": "q", "output": " \n "}, "output: empty"),
    ({"instruction": ["q"], "output": "a"}, "instruction: expected a string, got list"),
    ({"instruction": "q", "output": 3}, "output: expected a string, got int"),
    ({"instruction": "q", "output": "a", "history": "x"}, "history: expected a list of [user, assistant] pairs, got str"),
    ({"instruction": "q", "output": "a", "history": [["u"]]}, "history[0]: expected a [user, assistant] pair of non-empty strings"),
    ({"instruction": "q", "output": "<think>r</think>\n"}, "output: empty after the </think> block (no reply to train on)"),
    ({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "a"}]},
     "messages[0].role: unknown role 'bot' (expected one of system, user, assistant, tool)"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}, "messages[1].content: empty"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}, "messages[1].content: missing"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": 1}]},
     "messages[1].reasoning_content: expected a string, got int"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>r</think>a", "reasoning_content": "r"}]},
     "messages[1].content: has both reasoning_content and a <think> block"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "more"}]},
     "messages[2]: the last turn is 'user'; a row must end with an assistant reply"),
    ({"messages": [{"role": "user", "content": "q"}]}, "messages: no assistant turn to train on"),
    ({"messages": []}, "messages: expected a non-empty list"),
    ({"messages": ["hi"]}, "messages[0]: expected an object, got str"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": {}}, "tools: expected a list, got dict"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
     "conversations[1].from: unknown role 'bot' (expected one of human, user, gpt, assistant, system, observation, tool)"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]}, "conversations[1].value: empty"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<think>r</think>"}]},
     "conversations[1].value: empty after the </think> block (no reply to train on)"),
    ({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
     "conversations[1]: the last turn is 'user'; a row must end with an assistant reply"),
    ("[1, 2]", "(row): expected a JSON object, got list"),
    ({"foo": 1}, "(row): unknown row format with keys ['foo']; expected alpaca (instruction/input/output), messages or sharegpt (conversations)"),
    # Control tokens would silently change the conversation's structure.
    ({"instruction": "q", "output": "a<|im_end|>"}, "output: contains the control token <|im_end|>"),
    ({"instruction": "<|im_start|>user", "output": "a"}, "instruction: contains the control token <|im_start|>"),
    ({"instruction": "q", "output": "a", "history": [["q<|endoftext|>", "a"]]}, "turn 0 (user) content: contains the control token <|endoftext|>"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r<|im_end|>"}]},
     "messages[1].reasoning_content: contains the control token <|im_end|>"),
    ({"conversations": [{"from": "human", "value": "q<|im_end|>\n<|im_start|>assistant\nx"}, {"from": "gpt", "value": "a"}]},
     "conversations[0].value: contains the control token <|im_start|>"),
    ({"system": "<|im_end|>", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     "system: contains the control token <|im_end|>"),
    # A non-string sharegpt system was silently dropped.
    ({"system": ["Be nice"], "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     "system: expected a string, got list"),
    # A row of two formats: reading one silently dropped the other.
    ({"instruction": "q", "output": "a", "messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
     "(row): holds fields of several formats (messages, instruction, output); keep one, or force one with --format / data_format"),
    # Malformed tool calls / tools crashed the chat template (a traceback in check / train) ...
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": "f"},
                   {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
     "messages[1].tool_calls: expected a list of tool calls, got str"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]},
                   {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
     "messages[1].tool_calls[0].arguments: missing"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"function": "f"}]},
                   {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
     "messages[1].tool_calls[0].function: expected an object with name and arguments, got str"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": ["f"]},
     "tools[0]: expected an object (a function's JSON schema), got str"),
    # Arguments are an object, or a string holding one (#22): anything else, at file:line (Qwen3.5's template
    # renders the arguments key by key and failed on a string; Qwen3's rendered any string verbatim).
    *[({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
                      "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": args}}]},
                     {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
       f"messages[1].tool_calls[0].function.arguments: {message}") for args, message in (
        ("city=Paris", "not valid JSON ('city=Paris'); give an object, or a string holding a JSON object"),
        ('{"city": "Paris"', "not valid JSON ('{\"city\": \"Paris\"'); give an object, or a string holding a JSON object"),
        ("", "not valid JSON (''); give an object, or a string holding a JSON object"),
        ('["Paris"]', 'a string holding a JSON list, not an object; give the arguments as an object ({"name": value, ...})'),
        ('"Paris"', 'a string holding a JSON str, not an object; give the arguments as an object ({"name": value, ...})'),
        (["Paris"], "expected an object or a string holding a JSON object, got list"),
        (3, "expected an object or a string holding a JSON object, got int"))],
    # ... or rendered a control token inside a call, silently training <|im_end|> mid-call.
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"x": "<|im_end|>"}'}}]},
                   {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
     "messages[1].tool_calls[0].function.arguments: contains the control token <|im_end|>"),
    # Arguments given as an object are rendered as JSON inside the trained call: the same check.
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": "<|im_end|>"}}}]}]},
     "messages[1].tool_calls[0].function.arguments: contains the control token <|im_end|>"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "tools": [{"type": "function", "function": {"name": "f", "description": "<|im_start|>"}}]},
     "tools[0]: contains the control token <|im_start|>"),
    # No user query: Qwen3's template renders the reply without the think block every served prompt has.
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}, NO_QUERY.format("messages")),
    ({"messages": [{"role": "user", "content": "<tool_response>r</tool_response>"}, {"role": "assistant", "content": "a"}]},
     NO_QUERY.format("messages")),
    ({"messages": [{"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]}, NO_QUERY.format("messages")),
    ({"conversations": [{"from": "observation", "value": "r"}, {"from": "gpt", "value": "a"}]}, NO_QUERY.format("conversations")),
    # Issue #18 case 9: hostile rows were tracebacks (RecursionError, unhashable 'from', UnicodeEncodeError later).
    ('{"instruction": "q", "output": "a", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "(line): nested more than 64 levels deep"),
    ('{"instruction": "q", "output": "a", "x": ' + "[" * 100 + "]" * 100 + "}",
     ("x" + "[0]" * 64)[:60] + "...: nested more than 64 levels deep"),
    ('{"instruction": "q", "output": "a", "n": ' + "1" * 5000 + "}",
     "(line): unreadable JSON: Exceeds the limit (4300 digits) for integer string conversion"),
    ({"conversations": [{"from": ["human"], "value": "q"}, {"from": "gpt", "value": "a"}]},
     "conversations[0].from: unknown role ['human'] (expected one of human, user, gpt, assistant, system, observation, tool)"),
    ({"conversations": [{"from": {"a": 1}, "value": "q"}, {"from": "gpt", "value": "a"}]},
     "conversations[0].from: unknown role {'a': 1} (expected one of human, user, gpt, assistant, system, observation, tool)"),
    ({"messages": [{"role": ["user"], "content": "q"}, {"role": "assistant", "content": "a"}]},
     "messages[0].role: unknown role ['user'] (expected one of system, user, assistant, tool)"),
    ('{"instruction": "q \\ud83d", "output": "a"}',
     "instruction: lone surrogate '\\ud83d' at character 2: not valid Unicode (a broken emoji escape?); fix the text"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\\udc00"}]}',
     "messages[1].content: lone surrogate '\\udc00' at character 0: not valid Unicode (a broken emoji escape?); fix the text"),
    # Case 10: a per-message "weight" (OpenAI's format) was silently trained; only 0 / 1 on assistant turns is read.
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},
     "messages: no assistant turn to train on (every assistant turn has weight 0)"),
    ({"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
     "messages[0].weight: only assistant turns take a weight (0: not trained, 1: trained); this is a user turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]},
     "messages[1].weight: expected 0 (not trained) or 1 (trained), got 0.5"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": True}]},
     "messages[1].weight: expected 0 (not trained) or 1 (trained), got True"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a", "weight": 0}]},
     "conversations: no assistant turn to train on (every assistant turn has weight 0)"),
    # Other message keys with a value would be ignored silently: refused.
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss": False}]},
     "messages[1].loss: unknown message key (known: content, name, reasoning_content, role, tool_call_id, tool_calls, "
     "weight); it would be ignored, so rename or remove it"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a", "thinking": "r"}]},
     "conversations[1].thinking: unknown message key (known: from, value, weight); it would be ignored, so rename or "
     "remove it"),
]


def test_tool_call_arguments_as_a_json_string_are_read_as_the_object():
    call = lambda args: {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",  # noqa: E731
                                      "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": args}}]},
                                     {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]}
    given = {"city": "Paris", "days": [1, 2], "units": {"t": "C"}}
    from_string = parse_row(call(json.dumps(given)), None)
    assert from_string.messages == parse_row(call(given), None).messages
    assert from_string.messages[1]["tool_calls"][0]["function"]["arguments"] == given
    bare = parse_row({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
                                   "tool_calls": [{"name": "f", "arguments": '{"x": 1}'}]}]}, None)
    assert bare.messages[1]["tool_calls"] == [{"name": "f", "arguments": {"x": 1}}]


@pytest.mark.parametrize("bad,message", BAD_ROWS, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD_ROWS)])
def test_bad_row_names_file_line_and_field(tmp_path, bad, message):
    good = {"instruction": "q", "output": "a"}
    path = jsonl(tmp_path / "d.jsonl", good, good, bad, good)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert info.value.problems == [f"{path}:3: {message}"]
    assert str(info.value) == f"{path}:3: {message}\n{FIX_HINT}"
    res = load_dataset(path, skip_invalid=True)
    assert len(res.conversations) == 3 and res.invalid == [f"{path}:3: {message}"]


def test_not_utf8_jsonl_line(tmp_path):
    path = write(tmp_path / "d.jsonl", b'{"instruction": "q", "output": "a"}\n{"instruction": "caf\xe9", "output": "a"}\n')
    assert problems(path) == [f"{path}:2: (line): not valid UTF-8; save the file as UTF-8"]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf"], ids=["zero_bytes", "blank", "bom_only"])
@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_empty_file(tmp_path, content, suffix):
    path = write(tmp_path / f"e.{suffix}", content)
    assert problems(path) == [f"{path}:1: (file): empty file"]


def test_all_problems_collected_but_only_20_listed(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", *([{"instruction": "q", "output": ""}] * 25), {"instruction": "q", "output": "a"})
    with pytest.raises(DataError) as info:
        load_dataset(path)
    err = info.value
    assert err.problems == [f"{path}:{n}: output: empty" for n in range(1, 26)]
    lines = str(err).splitlines()
    assert lines[:20] == err.problems[:20]
    assert lines[20:] == ["... and 5 more problem(s)", FIX_HINT]
    assert isinstance(err, UserError)


def test_skip_invalid_counts_dropped_rows(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", {"instruction": "q", "output": "a"}, "{nope", {"instruction": "q", "output": "b"})
    b = jsonl(tmp_path / "b.jsonl", {"instruction": "", "output": "a"}, {"instruction": "q", "output": "c"})
    res = load_dataset([a, b], skip_invalid=True)
    assert isinstance(res, LoadResult)
    assert [c.messages[1]["content"] for c in res.conversations] == ["a", "b", "c"]
    assert res.invalid == [
        f"{a}:2: (line): malformed JSON: Expecting property name enclosed in double quotes at column 2",
        f"{b}:1: instruction: empty",
    ]
    # Without skip_invalid the same data stops with both problems.
    assert problems([a, b]) == res.invalid


def test_no_valid_rows_is_an_error_even_with_skip_invalid(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", {"instruction": "q", "output": ""})
    assert problems(path, skip_invalid=True) == [f"{path}: no valid rows", f"{path}:1: output: empty"]


def test_write_jsonl_round_trip(tmp_path):
    src = jsonl(tmp_path / "in.jsonl",
                {"instruction": "q", "input": "ctx", "output": "<think>r</think>a"},
                {"tools": [{"type": "function", "function": {"name": "f"}}],
                 "messages": [{"role": "user", "content": "é"}, {"role": "assistant", "content": "ü"}]})
    convs = load_dataset(src).conversations
    out = tmp_path / "out" / "norm.jsonl"
    write_jsonl(convs, out)
    assert [p.name for p in out.parent.iterdir()] == ["norm.jsonl"]
    again = load_dataset(out).conversations
    assert [c.to_json() for c in again] == [c.to_json() for c in convs]
    assert "é" in out.read_text(encoding="utf-8")


# ---------------------------------------------------------------- report


def _loaded(convs, invalid=()):
    res = LoadResult(conversations=list(convs), invalid=list(invalid), files=["d.jsonl"])
    for c in convs:
        res.rows_per_format[c.format] += 1
    return res


def _conv(answer, fmt="alpaca"):
    return Conversation([{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}], format=fmt)


def _enc(n, trained, **kw):
    return Encoded(list(range(n)), [-100] * (n - trained) + list(range(trained)), **kw)


def test_report_counts():
    convs = [_conv("a"), _conv("a"), _conv("a"), _conv("b", "messages"), _conv("c")]
    # The same conversation read from different formats / sources is still a duplicate.
    convs[1].source, convs[2].format = "x:1", "sharegpt"
    encoded = [_enc(10, 4), _enc(20, 5, truncated=True, reply_cut=True), _enc(30, 6, truncated=True, thinking=True),
               _enc(8, 2, reasoning_dropped=True)]
    r = build_report(_loaded(convs, ["d.jsonl:9: output: empty"]), encoded, ["d.jsonl:5: no trained token"], 30)
    assert r["rows_read"] == 6 and r["rows_kept"] == 4
    assert r["rows_per_format"] == {"alpaca": 3, "sharegpt": 1, "messages": 1}
    assert r["invalid_rows"] == 1 and r["dropped_no_trained_tokens"] == 1 and r["rows_dropped_total"] == 2
    assert r["invalid_examples"] == ["d.jsonl:9: output: empty"] and r["dropped_examples"] == ["d.jsonl:5: no trained token"]
    assert r["duplicate_rows"] == 2
    assert (r["rows_truncated"], r["rows_reply_cut"]) == (2, 1)
    assert (r["thinking_rows"], r["non_thinking_rows"], r["reasoning_dropped_rows"]) == (1, 3, 1)
    assert (r["tokens"], r["trained_tokens"], r["trained_token_share"]) == (68, 17, 0.25)
    assert r["length_percentiles"] == {"min": 8, "p50": 20, "p90": 30, "p99": 30, "max": 30, "mean": 17.0}


def test_report_tools_make_a_different_row():
    a = _conv("a")
    b = Conversation(a.messages, tools=[{"type": "function", "function": {"name": "f"}}])
    assert build_report(_loaded([a, b]), [], [], 10)["duplicate_rows"] == 0


def _report(**kw):
    base = {"rows_read": 10, "rows_dropped_total": 0, "rows_reply_cut": 0, "duplicate_rows": 0}
    return {**base, **kw}


def test_thresholds():
    limits = SimpleNamespace(max_dropped_share=0.1, max_truncated_share=0.25, max_duplicate_share=0.5,
                             max_no_reasoning_share=0.5)
    assert check_thresholds(_report(rows_dropped_total=1, rows_reply_cut=2, duplicate_rows=5,
                                    rows_without_reasoning=5), limits) == []
    got = check_thresholds(_report(rows_dropped_total=2, rows_reply_cut=3, duplicate_rows=6, rows_without_reasoning=6),
                           limits)
    assert got == [
        "2 of 10 rows dropped (20.0%) exceeds max_dropped_share=0.1; fix the data or raise max_dropped_share",
        "3 of 10 rows with a reply cut by cutoff_len (30.0%) exceeds max_truncated_share=0.25; fix the data or raise max_truncated_share",
        "6 of 10 duplicate rows (60.0%) exceeds max_duplicate_share=0.5; fix the data or raise max_duplicate_share",
        "6 of 10 rows without reasoning in thinking mode (the model learns an empty think block) (60.0%) exceeds "
        "max_no_reasoning_share=0.5; fix the data or raise max_no_reasoning_share",
    ]


def test_no_reasoning_threshold_on_a_hybrid_template_names_thinking_off():
    # Qwen3.5 4B and up think by default (auto): plain answers fail this threshold; the way out is named.
    limits = SimpleNamespace(max_dropped_share=0.1, max_truncated_share=0.25, max_duplicate_share=0.5,
                             max_no_reasoning_share=0.5)
    assert check_thresholds(_report(rows_without_reasoning=6, template_kind="hybrid"), limits) == [
        "6 of 10 rows without reasoning in thinking mode (the model learns an empty think block) (60.0%) exceeds "
        "max_no_reasoning_share=0.5; fix the data or raise max_no_reasoning_share, or set enable_thinking: false to "
        "train direct answers"]


def test_report_counts_rows_without_reasoning_only_in_thinking_mode():
    convs = [_conv("a"), _conv("b"), _conv("c")]
    encoded = [_enc(10, 4, thinking=True), _enc(10, 4), _enc(10, 4)]
    on, off = build_report(_loaded(convs), encoded, [], 30, True), build_report(_loaded(convs), encoded, [], 30)
    assert (on["rows_without_reasoning"], off["rows_without_reasoning"]) == (2, 0)
    assert on["enable_thinking"] is True


def test_report_counts_a_row_of_several_sequences_once_and_their_cost():
    # Row 2 trains an earlier reply in a sequence of its own (data/encode.py): one row for every count and
    # threshold (its flags: any of its sequences'), one more sequence, and its tokens as the cost.
    convs = [_conv("a"), _conv("b"), _conv("c")]
    encoded = [_enc(10, 4), _enc(12, 4), _enc(7, 3, thinking=True, truncated=True, reply_cut=True, continues_row=True),
               _enc(9, 2, truncated=True)]
    r = build_report(_loaded(convs), encoded, [], 30, True)
    assert (r["rows_kept"], r["sequences"], r["extra_sequences"], r["extra_sequence_tokens"]) == (3, 4, 1, 7)
    assert (r["thinking_rows"], r["non_thinking_rows"], r["rows_without_reasoning"]) == (1, 2, 2)
    assert (r["rows_truncated"], r["rows_reply_cut"]) == (2, 1)
    assert (r["tokens"], r["trained_tokens"]) == (38, 13)
    assert "1 extra sequence(s) train earlier replies after their own served prompt" in format_report(r)
    assert "7 of the 38 tokens (18.4%)" in format_report(r)


def test_duplicates_over_threshold_fail_the_run_naming_the_key():
    convs = [_conv("same")] * 3 + [_conv("other")]
    report = build_report(_loaded(convs), [_enc(5, 2)] * 4, [], 16)
    assert report["duplicate_rows"] == 2
    cfg = SimpleNamespace(max_dropped_share=0.05, max_truncated_share=0.25, max_duplicate_share=0.4,
                          max_no_reasoning_share=0.5)
    with pytest.raises(UserError) as info:
        enforce(report, cfg)
    assert "2 of 4 duplicate rows (50.0%) exceeds max_duplicate_share=0.4" in str(info.value)
    cfg.max_duplicate_share = 0.5
    enforce(report, cfg)  # exactly at the limit passes


def test_split_is_seeded_and_keeps_order():
    train, val = split_indices(10, 0.2, seed=1)
    assert val.tolist() == [6, 8]  # the rows earlier versions held out (a resumed run must see the same split)
    assert train.tolist() == [0, 1, 2, 3, 4, 5, 7, 9]  # file order kept
    assert split_indices(1000, 0.01, seed=42)[1].tolist() == [33, 85, 354, 483, 507, 523, 750, 776, 895, 922]
    assert len(split_indices(10, 3, seed=0)[1]) == 3
    train, val = split_indices(10, 0, seed=0)
    assert train.tolist() == list(range(10)) and len(val) == 0
    # Holding out every row (or more) leaves nothing to train: refused, naming the key, never clamped.
    with pytest.raises(UserError, match=r"^val_size: 5 holds out 5 row\(s\), but the data has 2 usable row\(s\)"):
        split_indices(2, 5, seed=0)
    with pytest.raises(UserError, match="val_size: 0.5 holds out 1 row"):
        split_indices(1, 0.5, seed=0)
    assert [len(part) for part in split_indices(2, 1, seed=0)] == [1, 1]


# ---------------------------------------------------------------- issue 18: hostile files, weight


def test_json_array_with_trailing_text_names_the_line(tmp_path):
    """case 10: reported as malformed JSONL on every line, not as extra data after the array."""
    path = write(tmp_path / "d.json", json.dumps([{"instruction": "q", "output": "a"}], indent=1) + "\n}\n")
    assert problems(path) == [f"{path}:7: (file): extra data after the JSON array at line 7, column 1; remove it"]
    lines = write(tmp_path / "l.json", '{"instruction": "q", "output": "a"}\n{"instruction": "q2", "output": "a2"}\n')
    assert len(load_dataset(lines).conversations) == 2  # JSON Lines in a .json file are still read as such


def test_deep_json_file_is_one_line_even_with_skip_invalid(tmp_path):
    """case 9: RecursionError, also with skip_invalid."""
    path = write(tmp_path / "d.json", "[" * 50_000 + "]" * 50_000)
    for skip in (False, True):
        assert problems(path, skip_invalid=skip) == [f"{path}:1: (file): nested more than 64 levels deep"]
    deep_item = write(tmp_path / "i.json", json.dumps([{"instruction": "q", "output": "a"},
                                                      {"instruction": "q", "output": "a", "x": [[[[[[1]]]]]] * 1}]))
    assert len(load_dataset(deep_item).conversations) == 2  # a few levels are fine


def test_empty_dataset_path_is_refused(tmp_path, monkeypatch):
    """case 7: an empty path meant "this directory": every data file in it was read."""
    monkeypatch.chdir(tmp_path)
    jsonl(tmp_path / "other.jsonl", {"instruction": "q", "output": "a"})
    for spec in ("", "  ", ["", "other.jsonl"]):
        with pytest.raises(UserError, match="dataset: empty path"):
            load_dataset(spec)


def test_unknown_message_keys_without_a_value_are_ignored(tmp_path):
    row = {"messages": [{"role": "user", "content": "q", "name": "ann"},
                        {"role": "assistant", "content": "a", "refusal": None, "function_call": None}]}
    (conv,) = load_dataset(jsonl(tmp_path / "d.jsonl", row)).conversations
    assert conv.messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_weight_is_kept_written_back_and_ignored_by_the_template(tmp_path, tokenizer):
    """case 10 decision: an assistant turn's "weight" (0 / 1) is read and kept on the message (encode decides what
    it trains); prepare writes it back; the chat template renders the row exactly as without it."""
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1", "weight": 0},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2", "weight": 1}]
    sg = {"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1", "weight": 0},
                            {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]}
    res = load_dataset(jsonl(tmp_path / "d.jsonl", {"messages": msgs}, sg))
    a, b = res.conversations
    assert a.messages == msgs and a.to_json() == {"messages": msgs}
    assert b.messages == msgs[:3] + [{"role": "assistant", "content": "a2"}]
    write_jsonl(res.conversations, tmp_path / "out.jsonl")
    again = load_dataset(tmp_path / "out.jsonl").conversations
    assert [c.messages for c in again] == [a.messages, b.messages]
    plain = [{k: v for k, v in m.items() if k != "weight"} for m in msgs]
    for thinking in (False, True):
        assert tokenizer.apply_chat_template(msgs, tokenize=False, enable_thinking=thinking) == \
            tokenizer.apply_chat_template(plain, tokenize=False, enable_thinking=thinking)


def test_reasoning_content_holding_the_closing_think_tag_is_refused(tmp_path):
    """#23 item 23: reasoning_content with `</think>` trained the model to close its reasoning mid-way (a server's
    reasoning parser then cuts it there) without a word. Refused as that row's problem; skip_invalid counts it."""
    from qwen_sft.data.formats import load_dataset
    from qwen_sft.errors import DataError

    rows = [{"messages": [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4", "reasoning_content": "add them</think>then answer"}]},
            {"messages": [{"role": "user", "content": "2+3?"},
                          {"role": "assistant", "content": "5", "reasoning_content": "add them"}]}]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert info.value.problems == [f"{path}:1: messages[1].reasoning_content: contains </think>, which closes the "
                                   "think block: the model would learn to end its reasoning there (and a server's "
                                   "reasoning parser would cut it there); remove it"]
    loaded = load_dataset(path, skip_invalid=True)
    assert len(loaded.conversations) == 1 and len(loaded.invalid) == 1
