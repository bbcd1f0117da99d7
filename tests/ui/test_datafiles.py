"""The row index of the data pages reads every row as the training readers do: same rows, same file:line, same
errors, in any page, without reading the rest of the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen_sft.data.formats import RowError, load_file
from qwen_sft.errors import DataError
from qwen_sft.ui import datafiles

GOOD = {"instruction": "q", "output": "a"}


def reader_rows(path: Path) -> list[tuple[str, object]]:
    """(label, row or error text) as formats.load_file yields them."""
    return [(str(line), str(row) if isinstance(row, RowError) else row) for line, row, _ in load_file(path)]


def index_rows(path: Path, page: int = 3) -> list[tuple[str, object]]:
    index = datafiles.build_index(path, path.name)
    out = []
    for start in range(0, len(index), page):  # read a page at a time, as the page does
        for r in index.read(start, page):
            out.append((r.where.split(":", 1)[1], str(r.row) if isinstance(r.row, RowError) else r.row))
    return out


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CASES = {
    "blank lines, CRLF, a final line without newline": b'\n{"instruction": "q", "output": "a"}\r\n\r\n  \n'
                                                        b'{"instruction": "x", "output": "y"}',
    "BOM, bad JSON, bad UTF-8, Unicode-space-only line": b'\xef\xbb\xbf{"instruction": "q", "output": "a"}\nnot json\n'
                                                          b'{"instruction": "\xff"}\n\xe3\x80\x80\n\xc2\xa0 \n[1, 2]\n'
                                                          b'{"instruction": "\xc3\xa9", "output": "b"}\n',
    "lines of separator control bytes only (blank to str.strip())": b'\x1c\n{"instruction": "q", "output": "a"}\n'
                                                                    b'\x1f \x1e\n{"instruction": "\x1c", "output": '
                                                                    b'"b"}\n',
    "a lone surrogate and deep nesting": b'{"instruction": "\\ud83d", "output": "a"}\n' + b"[" * 70 + b"]" * 70 + b"\n",
}


@pytest.mark.parametrize("block", [7, 64, datafiles.BLOCK_BYTES])  # lines across blocks, longer than a block
@pytest.mark.parametrize("name", CASES)
def test_jsonl_rows_and_labels_are_the_readers(tmp_path, monkeypatch, name, block):
    monkeypatch.setattr(datafiles, "BLOCK_BYTES", block)
    path = write(tmp_path / "d.jsonl", CASES[name])
    expected = reader_rows(path)
    assert index_rows(path) == expected and index_rows(path, page=1) == expected
    assert len(datafiles.build_index(path, "d.jsonl")) == len(expected)


@pytest.mark.parametrize("data", [b'instruction,output\n"q1\rmore",a1\nq2,a2\nq3,a3\n',  # a CR inside a quoted cell
                                  b"instruction,output\rq1,a1\rq2,a2\r",  # lines ended by CR alone (old Mac tools)
                                  b'instruction,output\r\r\nq1,"a\r\r\nb"\r\nq2,a2\r\n',  # CR before CRLF
                                  b"instruction,output\r\nq1,a1\rq2,a2\nq3,a3\r\n",  # all three at once
                                  b"instruction,output\r\ra,b\rc,d\r"])  # a blank CR-only line after the header
def test_csv_lines_ended_by_a_lone_cr_are_numbered_as_the_reader_numbers_them(tmp_path, data):
    path = write(tmp_path / "d.csv", data)
    expected = reader_rows(path)
    assert index_rows(path) == expected and index_rows(path, page=1) == expected


def test_csv_records_spanning_lines_keep_their_first_line(tmp_path):
    path = write(tmp_path / "d.csv", b'instruction,output,input\r\n"two\r\nlines",b,\r\n\r\nq,"a ""quoted""\nreply",x\n'
                                      b'only one field\nq3,a3,\n')
    expected = reader_rows(path)
    assert [label for label, _ in expected] == ["2", "5", "7", "8"]
    assert index_rows(path) == expected and index_rows(path, page=1) == expected
    tsv = write(tmp_path / "d.tsv", b"instruction\toutput\nq\ta\n")
    assert index_rows(tsv) == reader_rows(tsv)


def test_json_array_items(tmp_path):
    rows = [GOOD, {"instruction": "caf\u00e9 \u4e2d\u6587", "output": "\u00e9"}, [1], {"instruction": "q"}]
    for text in (json.dumps(rows), json.dumps(rows, ensure_ascii=False, indent=2), "\ufeff" + json.dumps(rows)):
        path = write(tmp_path / "d.json", text.encode("utf-8"))
        assert index_rows(path) == reader_rows(path), text[:40]
        assert datafiles.build_index(path, "d.json").find("item 2") == 2
    jsonl_in_json = write(tmp_path / "l.json", b'{"instruction": "q", "output": "a"}\n{"instruction": "r", "output": '
                                               b'"b"}\n')
    assert index_rows(jsonl_in_json) == reader_rows(jsonl_in_json)


@pytest.mark.parametrize("data,problem", [(b"", "empty file"), (b"\xef\xbb\xbf \n\r\n", "empty file"),
                                          (b"\xff\xfe{\x00\n\x00", "UTF-16"),
                                          (b'instruction,output\n"open,a\n', "broken CSV quoting")])
def test_whole_file_problems_are_the_readers_errors(tmp_path, data, problem):
    path = write(tmp_path / ("d.csv" if b"instruction" in data else "d.jsonl"), data)
    with pytest.raises(DataError, match=problem):
        datafiles.build_index(path, path.name)
    broken = write(tmp_path / "b.json", b'[{"a": 1}, ')
    with pytest.raises(DataError, match=r"b.json:1: \(file\): malformed JSON"):
        datafiles.build_index(broken, "b.json")


def test_find_a_row_by_its_line_and_the_cache_follows_changes(tmp_path):
    path = write(tmp_path / "d.jsonl", b'\n\n{"instruction": "q", "output": "a"}\n\n{"instruction": "r", "output": '
                                       b'"b"}\n')
    files = datafiles.DataFiles(tmp_path)
    index = files.open(path)
    assert [index.find(x) for x in ("3", "5", "4", "1", "x", "\u00b2")] == [0, 1, None, None, None, None]
    assert files.open(path) is index  # the same file: the same index
    path.write_bytes(path.read_bytes() + b'{"instruction": "s", "output": "c"}\n')
    assert len(files.open(path)) == 3  # changed: built again


def test_search_finds_text_in_values_case_insensitively(tmp_path):
    rows = [GOOD, {"instruction": "Caf\u00e9 au lait", "output": "no"}, {"instruction": "q", "output": "CAF\u00c9"},
            {"instruction": "output", "output": "a"}]
    path = write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode() + b"broken caf\xc3\xa9\n")
    index = datafiles.build_index(path, "d.jsonl")
    steps = list(datafiles.search(index, "caf\u00e9", chunk=2))
    assert [s[0] for s in steps] == [2, 4, 5]  # progress, chunk by chunk
    found = [f for _, fs in steps for f in fs]
    assert [(i, where) for i, where, _ in found] == [(1, "d.jsonl:2"), (2, "d.jsonl:3")]  # \u00e9 escapes found
    assert [i for _, fs in datafiles.search(index, "output") for i, _, _ in fs] == [3]  # values, not keys


@pytest.mark.parametrize("kind", ["parquet", "arrow-file", "arrow-stream"])
def test_parquet_and_arrow_rows_are_the_readers_in_any_page(tmp_path, monkeypatch, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qwen_sft.data import columnar

    monkeypatch.setattr(columnar, "BATCH_ROWS", 3)  # a row group read a few rows at a time, pages across them

    # Mixed schemas in one table (nulls are absent keys), several row groups / batches, pages across them.
    rows = [GOOD if i % 3 else {"messages": [{"role": "user", "content": f"q{i}"},
                                            {"role": "assistant", "content": f"a{i}"}]} for i in range(11)]
    table = pa.Table.from_pylist(rows)
    path = tmp_path / ("d.parquet" if kind == "parquet" else "d.arrow")
    if kind == "parquet":
        pq.write_table(table, path, row_group_size=4)
    else:
        with pa.OSFile(str(path), "wb") as sink:
            opener = pa.ipc.new_file if kind == "arrow-file" else pa.ipc.new_stream
            with opener(sink, table.schema) as writer:
                for batch in table.to_batches(max_chunksize=3):
                    writer.write_batch(batch)
    expected = reader_rows(path)
    assert [label for label, _ in expected] == [f"row {i}" for i in range(11)]
    assert index_rows(path) == expected and index_rows(path, page=5) == expected
    index = datafiles.build_index(path, path.name)
    assert [index.find(x) for x in ("row 10", "row 11", "3", "x", "row \u00b2")] == [10, None, 3, None, None]
    assert index.read(9, 100)[-1].where == f"{path.name}:row 10"


def test_an_unreadable_parquet_file_is_the_readers_error(tmp_path):
    path = write(tmp_path / "d.parquet", b"not parquet at all")
    with pytest.raises(DataError, match=r"d.parquet: \(file\): not a readable Parquet file"):
        datafiles.build_index(path, path.name)
