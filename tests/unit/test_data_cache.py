"""The data pipeline at scale: parallel encoding equals one process and the in-memory encoder, byte for byte;
the cache is hit only by the same data, tokenizer, template and options; damaged caches are rebuilt."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_sft.batching import Collator, collate_padded, collate_padding_free
from qwen_sft.config import build_config
from qwen_sft.data import cache
from qwen_sft.data.dataset import encode_all
from qwen_sft.data.encode import EncodeOptions, encode
from qwen_sft.data.formats import expand_paths, load_dataset
from qwen_sft.data.parallel import prompt_tokens
from qwen_sft.data.report import build_report, encoded_flags
from qwen_sft.data.rowstore import OWN_MARKER, RowStore
from qwen_sft.samples import generate_samples
from qwen_sft.errors import DataError, UserError


def write_data(path: Path, n: int = 50) -> Path:
    """Sample rows (alpaca and messages, EN / ZH, some with reasoning), plus what the report counts: invalid
    rows, a duplicate, a sharegpt row, a row whose prompt alone passes cutoff_len (dropped)."""
    # Tool rows are left out: their tools' system prompt alone passes cutoff_len=160 (they would all be drops).
    rows = [json.dumps(r, ensure_ascii=False) for r in generate_samples(2 * n, seed=3) if "tools" not in r][:n]
    rows.insert(5, '{"instruction": "q", "output": ""}')  # invalid: empty output
    rows.insert(9, '{"instruction": "q", "output": "a"')  # invalid: malformed JSON
    rows.insert(12, rows[0])  # an exact duplicate
    rows.insert(
        20, json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    )
    rows.insert(30, json.dumps({"instruction": "word " * 200, "output": "ok"}))  # no trained token within cutoff
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def config(tmp: Path, **over):
    return build_config({"dataset": str(tmp / "data.jsonl"), "cutoff_len": 160, "skip_invalid": True,
                         "data_cache_dir": str(tmp / "cache"), **over})


def build(cfg, tokenizer, workers: int, chunk_rows: int, root: Path) -> RowStore:
    paths = expand_paths(cfg.dataset)
    fields = cache.key_fields(cfg, tokenizer, paths)
    return cache.build(cfg, tokenizer, paths, None, fields, root / cache.key_of(fields), workers, log=lambda m: None,
                       chunk_rows=chunk_rows)


def files_of(store: RowStore) -> dict[str, bytes]:
    """The rows' files (not meta.json nor the marker: they name the build's time and process)."""
    return {p.name: p.read_bytes() for p in sorted(store.path.iterdir()) if p.name not in ("meta.json", OWN_MARKER)}


@pytest.mark.parametrize("thinking", [False, True])
def test_parallel_encoding_equals_one_process_and_the_in_memory_encoder(tokenizer, tmp_path, thinking):
    write_data(tmp_path / "data.jsonl")
    cfg = config(tmp_path, enable_thinking=thinking)
    one = build(cfg, tokenizer, workers=1, chunk_rows=7, root=tmp_path / "one")
    two = build(cfg, tokenizer, workers=2, chunk_rows=7, root=tmp_path / "two")
    whole = build(cfg, tokenizer, workers=2, chunk_rows=1000, root=tmp_path / "whole")  # one chunk: in-process
    assert (one.meta["workers"], two.meta["workers"], whole.meta["workers"]) == (1, 2, 1)
    # Every file byte for byte: tokens, labels, offsets, flags, sources, rows as read, the report.
    assert files_of(two) == files_of(one) == files_of(whole)
    drop = ("created", "build_seconds", "workers")
    assert {k: v for k, v in two.meta.items() if k not in drop} == {k: v for k, v in one.meta.items() if k not in drop}

    # The oracle: every row read into memory and encoded in order, as before the cache existed.
    loaded = load_dataset(cfg.dataset, skip_invalid=True)
    opts = EncodeOptions(cutoff_len=cfg.cutoff_len, enable_thinking=thinking, train_on=cfg.train_on)
    kept, dropped = [], []
    for conv in loaded.conversations:
        e = encode(conv, tokenizer, opts)
        seqs = [s for s in [e] + e.more if s.num_trained]  # a row's sequences with a trained token (encode.py)
        for k, s in enumerate(seqs):
            s.continues_row = k > 0
        kept += seqs
        if not seqs:
            dropped.append(f"{conv.source}: no trained token within cutoff_len={cfg.cutoff_len} (the prompt before "
                           f"the first trained token is {prompt_tokens(conv, tokenizer, opts)} tokens)")
    rows = two.rows()
    assert len(rows) == len(kept) > 52
    for got, want in zip(rows, kept):
        assert got.input_ids.tolist() == want.input_ids and got.labels.tolist() == want.labels
        assert got.source == want.source and got.flags == {f: getattr(want, f) for f in encoded_flags()}
    assert [rows.conversation(i).to_json() for i in range(len(rows))] == [e.conversation.to_json() for e in kept]
    report = build_report(loaded, kept, dropped, cfg.cutoff_len, thinking, "hybrid")
    assert two.report == report
    # What the report must have seen for this to mean anything:
    assert report["invalid_rows"] == 2 and report["dropped_no_trained_tokens"] == 1 and report["duplicate_rows"] >= 1
    assert report["rows_reply_cut"] > 0 and len(report["rows_per_format"]) == 3
    assert report["rows_kept"] == 52 and report["sequences"] == len(kept) == 52 + report["extra_sequences"]
    assert report["reasoning_dropped_rows" if not thinking else "thinking_rows"] > 0


def test_cached_rows_collate_like_the_encoded_lists(tokenizer, tmp_path):
    write_data(tmp_path / "data.jsonl", n=12)
    cfg = config(tmp_path)
    rows, _ = encode_all(cfg, tokenizer, log=None)
    lists = [dataclasses.replace(encode(rows.conversation(i), tokenizer, EncodeOptions(cutoff_len=160)),
                                 source=rows[i].source) for i in range(len(rows))]
    pick = [3, 0, 7, 7, 1]
    for collate in (collate_padding_free, lambda r: collate_padded(r, 151643)):
        a, b = collate([rows[i] for i in pick]), collate([lists[i] for i in pick])
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].tolist() == b[k].tolist(), k
    a = Collator(rows, True, 0, np.array([[2], [5]]))([0, 1])
    assert a["row_ids"] == [rows[2].source, rows[5].source]


@pytest.mark.slow
def test_hit_and_miss(tokenizer, tmp_path):
    data = write_data(tmp_path / "data.jsonl", n=10)
    cfg = config(tmp_path)
    lines = []
    first, _ = encode_all(cfg, tokenizer, log=lines.append)
    assert lines[0].startswith("data cache: encoding") and str(tmp_path / "cache") in lines[0]
    lines.clear()
    again, _ = encode_all(cfg, tokenizer, log=lines.append)
    assert lines == [f"data cache: {len(first)} encoded rows from {first.store.path}"]
    assert again.store.path == first.store.path

    def key(c=cfg, tok=tokenizer):
        return cache.key_of(cache.key_fields(c, tok, expand_paths(c.dataset)))

    base = key()
    # Each of these changes the rows, so each must change the key.
    changed = {f"{name}={value}": key(config(tmp_path, **{name: value})) for name, value in [
        ("cutoff_len", 161), ("enable_thinking", True), ("train_on", "last"), ("skip_invalid", False),
        ("data_format", "jsonl")]}
    assert all(k != base for k in changed.values()) and len(set(changed.values())) == len(changed)
    assert set(dataclasses.asdict(cache.encode_options(cfg, tokenizer))) == {
        f.name for f in dataclasses.fields(EncodeOptions)
    }

    from qwen_sft.data.tokenizer import load_tokenizer

    from qwen_sft.assets import qwen3_tokenizer_dir

    other = load_tokenizer(str(qwen3_tokenizer_dir()))
    assert key(tok=other) == base  # the same tokenizer loaded again: the same key
    other.chat_template = other.chat_template.replace("<|im_start|>", "<|im_start|>", 1) + "\n"
    assert key(tok=other) != base  # a changed chat template

    text = data.read_text(encoding="utf-8")
    data.write_text(text.replace("a", "b", 1), encoding="utf-8")  # same size, one byte different
    assert key() != base
    lines.clear()
    changed_rows, _ = encode_all(cfg, tokenizer, log=lines.append)
    assert lines[0].startswith("data cache: encoding") and changed_rows.store.path != first.store.path
    data.write_text(text, encoding="utf-8")
    assert key() == base


def test_key_covers_the_encoder_version(tokenizer, tmp_path, monkeypatch):
    write_data(tmp_path / "data.jsonl", n=3)
    cfg = config(tmp_path)
    base = cache.key_of(cache.key_fields(cfg, tokenizer, expand_paths(cfg.dataset)))
    monkeypatch.setattr(cache, "ENCODE_VERSION", cache.ENCODE_VERSION + 1)
    assert cache.key_of(cache.key_fields(cfg, tokenizer, expand_paths(cfg.dataset))) != base


@pytest.mark.parametrize("damage", ["truncate", "marker", "meta"])
def test_damaged_cache_is_rebuilt(tokenizer, tmp_path, damage):
    write_data(tmp_path / "data.jsonl", n=10)
    cfg = config(tmp_path)
    rows, _ = encode_all(cfg, tokenizer, log=None)
    entry = rows.store.path
    good = files_of(rows.store)
    if damage == "truncate":  # e.g. a copy that ran out of space
        with open(entry / "input_ids.bin", "r+b") as f:
            f.truncate(len(good["input_ids.bin"]) - 4)
    elif damage == "marker":
        (entry / "COMPLETE").unlink()
    else:
        (entry / "meta.json").write_text("{")
    lines = []
    again, _ = encode_all(cfg, tokenizer, log=lines.append)
    assert lines[0].startswith(f"data cache: {entry} cannot be used (") and lines[1].startswith("data cache: encoding")
    assert again.store.path == entry and files_of(again.store) == good
    assert [e["status"] for e in cache.entries(tmp_path / "cache")] == ["ok"]


def test_killed_build_leaves_nothing_usable_and_is_cleaned(tokenizer, tmp_path, monkeypatch):
    write_data(tmp_path / "data.jsonl", n=10)
    cfg = config(tmp_path)
    root = tmp_path / "cache"

    def crash(self, meta, report):  # killed between the token files and the marker
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.RowWriter, "close", crash)
    with pytest.raises(KeyboardInterrupt):
        encode_all(cfg, tokenizer, log=None)
    assert list(root.iterdir()) == []  # nothing published, the temporary directory removed
    monkeypatch.undo()
    # A SIGKILLed build leaves its temporary directory: never read, removed by the next build of the key on
    # this machine (its process is gone) and by `cache clean`.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    key = cache.key_of(cache.key_fields(cfg, tokenizer, expand_paths(cfg.dataset)))
    import socket

    torn = root / f"{cache.TMP_PREFIX}{key}-{socket.gethostname()}-{int(dead.stdout)}"
    killed_build(torn, key, int(dead.stdout))
    assert [e["status"] for e in cache.entries(root)] == ["unfinished build (its process is gone)"]
    rows, _ = encode_all(cfg, tokenizer, log=None)
    assert not torn.exists() and [p.name for p in root.iterdir()] == [key]
    killed_build(torn, key, int(dead.stdout))
    removed, kept = cache.remove(root, None)
    assert [Path(e["path"]) for e in removed] == [torn] and kept == [] and (root / key).is_dir()


def killed_build(path: Path, key: str, pid: int, host: str | None = None) -> Path:
    """What a build killed with SIGKILL leaves: its marker (written first) and some of its files."""
    import socket

    path.mkdir()
    (path / OWN_MARKER).write_text(json.dumps({"format": "qwen-sft data cache", "store_version": 2, "key": key,
                                               "host": host or socket.gethostname(), "pid": pid, "started": 0}))
    (path / "input_ids.bin").write_bytes(b"\0" * 8)
    return path


def test_encoding_error_and_invalid_rows_stop_like_one_load(tokenizer, tmp_path):
    write_data(tmp_path / "data.jsonl", n=30)
    with pytest.raises(DataError) as info:  # without skip_invalid: every invalid row, in file order, nothing cached
        encode_all(config(tmp_path, skip_invalid=False, preprocessing_num_workers=2), tokenizer, log=None)
    path = tmp_path / "data.jsonl"
    assert info.value.problems == [f"{path}:6: output: empty",
                                   f"{path}:10: (line): malformed JSON: Expecting ',' delimiter at column 35"]
    assert cache.entries(tmp_path / "cache") == []
    (tmp_path / "bad.jsonl").write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q", "output": ""}\n')
    with pytest.raises(DataError, match="no valid rows"):
        encode_all(config(tmp_path, dataset=str(tmp_path / "bad.jsonl"), data_format="sharegpt"), tokenizer, log=None)


def test_ls_and_clean_touch_only_cache_entries(tokenizer, tmp_path):
    write_data(tmp_path / "data.jsonl", n=5)
    root = tmp_path / "cache"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    (root / "my-dir").mkdir()
    a, _ = encode_all(config(tmp_path), tokenizer, log=None)
    b, _ = encode_all(config(tmp_path, cutoff_len=100), tokenizer, log=None)
    found = cache.entries(root)
    assert sorted(e["key"] for e in found) == sorted([a.store.path.name, b.store.path.name])
    assert {e["rows"] for e in found} == {len(a)} and all(e["status"] == "ok" for e in found)
    assert cache.remove(root, None) == ([], [])  # nothing damaged
    assert [e["key"] for e in cache.remove(root, [a.store.path.name[:10]])[0]] == [a.store.path.name]
    assert len(cache.remove(root, None, everything=True)[0]) == 1
    assert sorted(p.name for p in root.iterdir()) == ["my-dir", "notes.txt"]


def test_no_lasting_cache_and_where_it_goes(tokenizer, tmp_path, monkeypatch):
    write_data(tmp_path / "data.jsonl", n=5)
    lines = []
    rows, _ = encode_all(config(tmp_path, data_cache_dir=None), tokenizer, log=lines.append)
    assert "nothing is kept" in lines[0] and not (tmp_path / "cache").exists()
    assert len(rows) == 7  # 5 samples, the duplicate and the sharegpt row
    monkeypatch.setenv("QWEN_SFT_DATA_CACHE", str(tmp_path / "env"))
    assert cache.cache_root("auto") == tmp_path / "env"
    monkeypatch.delenv("QWEN_SFT_DATA_CACHE")
    monkeypatch.setenv("QWEN_SFT_CACHE", str(tmp_path / "pkg"))
    assert cache.cache_root("auto") == tmp_path / "pkg" / "data"
    assert cache.cache_root("~/x") == Path.home() / "x"
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    with pytest.raises(UserError, match=r"^data_cache_dir: cannot create .*file/sub"):
        encode_all(config(tmp_path, data_cache_dir=str(unwritable / "sub")), tokenizer, log=None)


def test_a_dead_worker_or_a_stop_ends_the_build_and_caches_nothing(tokenizer, tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from qwen_sft.data import parallel
    from qwen_sft.errors import StopRequested

    write_data(tmp_path / "data.jsonl", n=30)
    cfg = config(tmp_path)
    paths = expand_paths(cfg.dataset)
    fields = cache.key_fields(cfg, tokenizer, paths)
    entry = tmp_path / "cache" / cache.key_of(fields)
    real = parallel.encode

    def dies(conv, tok, opts):  # the workers are forked after this patch: they run it
        if conv.source.endswith(":25"):
            import os
            os._exit(9)  # e.g. the kernel's out-of-memory killer
        return real(conv, tok, opts)

    monkeypatch.setattr(parallel, "encode", dies)
    with pytest.raises(BrokenProcessPool):
        cache.build(cfg, tokenizer, paths, None, fields, entry, workers=2, log=lambda m: None, chunk_rows=4)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(parallel, "encode", real)
    calls = []
    with pytest.raises(StopRequested, match="stopped while encoding the data; nothing was saved"):
        cache.build(cfg, tokenizer, paths, None, fields, entry, workers=2, log=lambda m: None, chunk_rows=4,
                    stop=lambda: calls.append(1) or len(calls) > 3)
    assert list((tmp_path / "cache").iterdir()) == []


def test_direct_tokenizer_answers_encodes_call_like_the_tokenizer(tokenizer):
    from qwen_sft.data.encode import render
    from qwen_sft.data.formats import parse_row
    from qwen_sft.data.parallel import DirectTokenizer

    direct = DirectTokenizer(tokenizer)
    texts = [render(parse_row(r, None), tokenizer, thinking)[0] for r in generate_samples(150, seed=5)
             for thinking in (False, True)]
    texts += [
        "",
        " ",
        "\n\n\n",
        "<|im_start|>x<|im_end|><|endoftext|>",
        "<think>\n\n</think>\n\n",
        "emoji 🙂🙂 e\u0301",
        "  leading and trailing  ",
        "tab\tand\r\nCRLF",
        "<tool_call>\n{\"a\": 1}\n</tool_call>",
        "x" * 5000,
    ]
    call = dict(add_special_tokens=False, return_offsets_mapping=True)
    for t in texts:
        got, want = direct(t, **call), tokenizer(t, **call)
        assert dict(got) == dict(want) and got.input_ids == want.input_ids, t[:80]
    # Every other call shape is the tokenizer's own.
    for args, kw in [(("hi",), {}), ((["a", "b"],), call), (("hi",), {**call, "return_attention_mask": False}),
                     (("hi",), {**call, "truncation": True, "max_length": 1})]:
        assert dict(direct(*args, **kw)) == dict(tokenizer(*args, **kw))
    tokenizer("reset", **call)  # the truncating call left truncation set on the shared tokenizer's backend
    assert tokenizer.backend_tokenizer.truncation is None
    assert direct.apply_chat_template is not None and direct.pad_token_id == tokenizer.pad_token_id


def test_every_row_dropped_is_an_empty_entry_with_its_report(tokenizer, tmp_path):
    (tmp_path / "data.jsonl").write_text('{"instruction": "' + "word " * 50 + '", "output": "ok"}\n')
    cfg = config(tmp_path, cutoff_len=16)
    for _ in range(2):  # built, then read back
        rows, report = encode_all(cfg, tokenizer, log=None)
        assert len(rows) == 0 and len(rows.lengths) == 0 and report["dropped_no_trained_tokens"] == 1


def test_the_run_record_hashes_come_from_the_cache(tokenizer, tmp_path):
    from qwen_sft import checkpoint as ckpt
    from qwen_sft.data.dataset import encode_and_split

    write_data(tmp_path / "data.jsonl", n=20)
    data = encode_and_split(config(tmp_path, val_size=3), tokenizer, log=None)
    assert data.dataset_hash == ckpt.file_hash(data.report["files"])  # what the run record had always hashed
    other = encode_and_split(config(tmp_path, val_size=3, seed=1), tokenizer, log=None)  # another held-out split
    assert data.train.fingerprint() != other.train.fingerprint()
    assert (
        data.train.fingerprint()
        == encode_and_split(config(tmp_path, val_size=3), tokenizer, log=None).train.fingerprint()
    )


def test_a_full_disk_is_one_error_and_leaves_nothing(tokenizer, tmp_path, monkeypatch):
    import errno
    import os

    from qwen_sft.data import rowstore

    write_data(tmp_path / "data.jsonl", n=10)
    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rowstore.os, "fsync", full)
    with pytest.raises(
        UserError, match=r"^cannot write the data cache .*: no space left on device; set data_cache_dir"
    ):
        encode_all(config(tmp_path), tokenizer, log=None)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(rowstore.os, "fsync", real)
    # A data file that cannot be read is not a cache problem: its own error, never 'cannot write the data cache'.
    def unreadable(self):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    with pytest.raises(PermissionError):
        encode_all(config(tmp_path), tokenizer, log=None)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_row_the_template_cannot_serve_is_an_invalid_row_at_its_line(tokenizer, tmp_path, monkeypatch, workers):
    """The encoder's refusal of one row (EncodeError: the template renders it unlike its served prompt) is that
    row's problem, `file:line: (template): ...`, like any invalid row: listed, never a crash or a silent drop."""
    from qwen_sft.data import encode as encode_mod

    real = encode_mod._encode

    def refuse_one(conv, tok, opts):  # workers are forked: they inherit the patch
        if conv.messages[-1]["content"] == "refused reply":
            raise encode_mod.EncodeError("the chat template renders the last reply unlike the prompt a server builds")
        return real(conv, tok, opts)

    monkeypatch.setattr(encode_mod, "_encode", refuse_one)
    path = tmp_path / "data.jsonl"
    rows = [json.dumps(r) for r in generate_samples(6, seed=1)]
    rows.insert(3, json.dumps({"instruction": "q", "output": "refused reply"}))
    path.write_text("\n".join(rows) + "\n")
    problem = f"{path}:4: (template): the chat template renders the last reply unlike the prompt a server builds"
    with pytest.raises(DataError) as info:  # 2 workers: chunks of 2 rows, the refused row in a worker's chunk
        build(config(tmp_path, skip_invalid=False), tokenizer, workers, 2, tmp_path / "cache")
    assert info.value.problems == [problem]
    assert cache.entries(tmp_path / "cache") == []
    store = build(config(tmp_path), tokenizer, workers, 2, tmp_path / "cache")
    assert store.report["invalid_rows"] == 1 and store.report["invalid_examples"] == [problem]
    assert store.report["rows_kept"] == 6 and store.report["rows_read"] == 7
    assert len(store) == store.report["sequences"]  # a multi-turn row may be several sequences (data/encode.py)
