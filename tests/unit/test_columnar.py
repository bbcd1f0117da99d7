"""Parquet, Arrow and `datasets.save_to_disk` input: the same rows as JSONL give the same encoded rows, masks and
report, and bad rows get the same 'file:row N: field: message' errors."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qwen_sft.config import build_config
from qwen_sft.data.dataset import encode_all
from qwen_sft.data.formats import expand_paths, load_dataset
from qwen_sft.errors import DataError, UserError

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
CONVERT = {"type": "function", "function": {"name": "convert", "parameters": {
    "type": "object", "properties": {"amount": {"type": "number"}, "to": {"type": "string"}}}}}

ROWS = [
    {"instruction": "Explain inflation.", "output": "Prices rise over time."},
    {"instruction": "Translate", "input": "Bonjour", "output": "Hello", "system": "You translate."},
    {"instruction": "And now?", "output": "Still 3.", "history": [["What is 1+2?", "3."], ["Sure?", "Yes."]]},
    {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": "{\"temp\": 21}"},
            {"role": "assistant", "content": "It is 21 degrees.", "reasoning_content": "The tool said 21."},
        ],
        "tools": [WEATHER, CONVERT],
    },
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "100 USD in EUR?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "function": {"name": "convert", "arguments": {"amount": 100, "to": "EUR"}}}
                ],
            },
            {"role": "tool", "content": "92"},
            {"role": "assistant", "content": "<think>92</think>About 92 EUR."},
        ],
        "tools": [CONVERT],
    },
    {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}], "system": "简短回答。"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def table_of(rows) -> pa.Table:
    """One schema for all rows (Table.from_pylist would take the first row's keys): every field of every row,
    null where a row lacks it, at every depth (tool schemas and call arguments too)."""
    return pa.Table.from_struct_array(pa.array(rows))


def encoded(tmp: Path, dataset, tokenizer, **over):
    cfg = build_config({"dataset": dataset if isinstance(dataset, list) else str(dataset), "cutoff_len": 512,
                        "data_cache_dir": str(tmp / "cache"), **over})
    rows, report = encode_all(cfg, tokenizer, log=None)
    return rows, report


def same_rows(a, b) -> None:
    """Equal tokens, labels, flags and rows as read; sources differ only in file and place."""
    assert len(a) == len(b) >= len(ROWS)  # a row's sequences (data/encode.py)
    for i in range(len(a)):
        assert a[i].input_ids.tolist() == b[i].input_ids.tolist() and a[i].labels.tolist() == b[i].labels.tolist()
        assert a[i].flags == b[i].flags
        assert a.conversation(i).to_json() == b.conversation(i).to_json()
        assert a.conversation(i).format == b.conversation(i).format


def without_places(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("files", "invalid_examples", "dropped_examples")}


@pytest.mark.parametrize("thinking", [False, True])
def test_parquet_arrow_and_save_to_disk_encode_like_jsonl(tmp_path, tokenizer, thinking):
    import datasets  # a dev dependency (pyproject [dev]): the real save_to_disk writer, not an imitation
    jsonl = write_jsonl(tmp_path / "data.jsonl", ROWS)
    table = table_of(ROWS)
    pq.write_table(table, tmp_path / "data.parquet", row_group_size=2)  # several row groups
    with pa.OSFile(str(tmp_path / "file.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=4)  # the IPC file format, in several record batches
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    datasets.Dataset.from_dict(table.to_pydict()).save_to_disk(str(tmp_path / "saved"), num_shards=2)

    want, want_report = encoded(tmp_path, jsonl, tokenizer, enable_thinking=thinking)
    assert want_report["rows_per_format"] == {"alpaca": 3, "messages": 2, "sharegpt": 1}
    assert want_report["thinking_rows" if thinking else "reasoning_dropped_rows"] == 2
    for name in ("data.parquet", "file.arrow", "stream.arrow", "saved"):
        got, report = encoded(tmp_path, tmp_path / name, tokenizer, enable_thinking=thinking)
        same_rows(got, want)
        assert without_places(report) == without_places(want_report), name
    got, _ = encoded(tmp_path, tmp_path / "data.parquet", tokenizer)
    assert [got[i].source for i in (0, len(got) - 1)] == [f"{tmp_path / 'data.parquet'}:row 0",
                                                          f"{tmp_path / 'data.parquet'}:row 5"]
    shards = expand_paths(str(tmp_path / "saved"))  # state.json's order, not a directory listing
    assert [p.name for p in shards] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    got, _ = encoded(tmp_path, tmp_path / "saved", tokenizer)
    # #23 item 23: named by the directory and the row's index in the whole dataset (`dataset[5]`), not by shard
    sources = list(dict.fromkeys(got[i].source for i in range(len(got))))  # a row's sequences share its source
    assert sources == [f"{tmp_path / 'saved'}:row {i}" for i in range(6)]


def test_bad_parquet_rows_name_file_row_and_field(tmp_path, tokenizer):
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q", "output": ""},
            {"instruction": "q <|im_end|>", "output": "a"}, {"instruction": "q", "output": None}]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    want = [f"{path}:row 1: output: empty", f"{path}:row 2: instruction: contains the control token <|im_end|>",
            f"{path}:row 3: output: missing"]
    with pytest.raises(DataError) as info:
        encoded(tmp_path, path, tokenizer)
    assert info.value.problems == want
    # The same rows in JSONL: the same problems, at their lines.
    jsonl = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as info:
        encoded(tmp_path, jsonl, tokenizer)
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [p.split(": ", 1)[1] for p in want]
    rows_, report = encoded(tmp_path, path, tokenizer, skip_invalid=True)
    assert len(rows_) == 1 and report["invalid_rows"] == 3 and report["invalid_examples"] == want
    # Column renames work as for JSON rows.
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "a"}]), tmp_path / "qa.parquet")
    from qwen_sft.data.formats import ColumnMap

    (conv,) = load_dataset(
        tmp_path / "qa.parquet", columns=ColumnMap(instruction="question", output="answer")
    ).conversations
    assert conv.messages[-1]["content"] == "a"


def test_unreadable_and_ambiguous_inputs_are_one_clear_error(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError) as info:
        load_dataset(broken)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(f"{broken}: (file): not a readable "
                                                                               "Parquet file")
    arrow = tmp_path / "broken.arrow"
    arrow.write_bytes(b"\0" * 16)
    with pytest.raises(DataError, match=r"broken.arrow: \(file\): not a readable Arrow file"):
        load_dataset(arrow)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"instruction": pa.array([], pa.string()), "output": pa.array([], pa.string())}), empty)
    with pytest.raises(DataError) as info:  # #23 item 23: a file without lines has no line 1 to name
        load_dataset(empty)
    assert info.value.problems == [f"{empty}: (file): no rows"]
    dd = tmp_path / "dd"
    (dd / "train").mkdir(parents=True)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(UserError, match=r"holds a DatasetDict \(train, test\); name one split's directory as the "
                                        r"dataset, e.g. .*dd/train"):
        expand_paths(str(dd))


def test_a_directory_of_parquet_shards_reads_in_name_order(tmp_path):
    d = tmp_path / "hub"
    d.mkdir()
    for i, part in enumerate([ROWS[3:], ROWS[:3]]):  # written out of order
        pq.write_table(table_of(part), d / f"train-0000{1 - i}-of-00002.parquet")
    loaded = load_dataset(d)
    assert [c.to_json() for c in loaded.conversations] == [
        c.to_json() for c in load_dataset(write_jsonl(tmp_path / "a.jsonl", ROWS)).conversations
    ]
    assert loaded.files == [str(d / "train-00000-of-00002.parquet"), str(d / "train-00001-of-00002.parquet")]


def test_a_bad_row_of_a_sharded_save_to_disk_directory_is_named_by_its_dataset_index(tmp_path, tokenizer):
    """#23 item 23: the README promises `dataset[N]`; a bad row in the second shard was named `SHARD:row K`."""
    import datasets

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(7)]
    rows[5]["output"] = ""
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"), num_shards=3)
    shards = expand_paths(str(tmp_path / "saved"))
    assert len(shards) == 3
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "saved")
    assert info.value.problems == [f"{tmp_path / 'saved'}:row 5: output: empty"]
    from qwen_sft.data.columnar import count_rows

    sizes = [count_rows(p) for p in shards]
    k = next(i for i in range(3) if sum(sizes[:i + 1]) > 5)
    with pytest.raises(DataError) as info:  # a shard named on its own: its own rows
        load_dataset(shards[k])
    assert info.value.problems == [f"{shards[k]}:row {5 - sum(sizes[:k])}: output: empty"] and k > 0
