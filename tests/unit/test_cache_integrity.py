"""Issue #23 items 2, 3, 10, 11, 20: the data cache removes only what it wrote and can prove it wrote, never a
build that may still run; it says what it removed and what it could not; an entry is checked against its
checksums whenever it is opened; the rows cached are those of the bytes hashed into its key."""

import fcntl
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from qwen_sft.cli import main
from qwen_sft.data import cache
from qwen_sft.data.dataset import encode_all
from qwen_sft.data.rowstore import OWN_MARKER, Damaged, RowStore
from qwen_sft.errors import UserError
from tests.unit.test_data_cache import config, files_of, killed_build, write_data


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


@pytest.fixture
def entry(tokenizer, tmp_path):
    """A cache with one good entry; returns its store."""
    write_data(tmp_path / "data.jsonl", n=10)
    rows, _ = encode_all(config(tmp_path), tokenizer, log=None)
    return rows.store


# ---------------------------------------------------------------- item 2: only what the cache wrote


def test_clean_never_touches_a_directory_without_the_caches_marker(entry, tmp_path, capsys):
    root = entry.path.parent
    key = entry.path.name
    mine = {".tmp-x": "notes", "a" * 64: "thesis", f".tmp-{key}-{socket.gethostname()}-{dead_pid()}": "draft",
            "b" * 64 + "-old": "keep"}
    for name, text in mine.items():
        (root / name).mkdir()
        (root / name / "file.txt").write_text(text)
    other = root / ("c" * 64)  # a marker that names another key: copied or renamed by hand, not this entry
    other.mkdir()
    (other / OWN_MARKER).write_text((entry.path / OWN_MARKER).read_text())
    (root / ("d" * 64)).symlink_to(entry.path)  # a link is never the cache's: it makes none
    assert [e["key"] for e in cache.entries(root)] == [key]
    for args in ([], ["--all"]):
        code, out, _ = cli(capsys, "cache", "clean", "--dir", root, *args)
        assert code == 0 and out.startswith(f"removed {len(args)} entr"), out
    assert sorted(p.name for p in root.iterdir()) == sorted([*mine, other.name, "d" * 64])
    assert all((root / name / "file.txt").read_text() == text for name, text in mine.items())


def test_a_build_that_may_still_run_is_left_alone_and_said(entry, tmp_path, capsys):
    root, key = entry.path.parent, entry.path.name
    other_host = killed_build(root / f".tmp-{key}-node-7-4242", key, 4242, host="node-7")
    # This host, its pid gone (or reused by another process), but its marker still locked: a build that runs.
    held = killed_build(root / f".tmp-{key}-{socket.gethostname()}-1", key, dead_pid())
    fd = os.open(held / OWN_MARKER, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    mib = cache._size(root / key) / 2**20
    try:
        code, out, _ = cli(capsys, "cache", "clean", "--dir", root, "--all")
        lines = out.splitlines()
        assert code == 0 and lines[0] == f"removed 1 entry ({mib:.1f} MiB) from {root}"
        assert sorted(lines[1:]) == sorted([
            f"  not removed: {held.name[:40]}  being built (pid {json.loads((held / OWN_MARKER).read_text())['pid']} "
            f"on {socket.gethostname()})",
            f"  not removed: {other_host.name[:40]}  unfinished build of host node-7 (pid 4242), which cannot be "
            f"checked from {socket.gethostname()}: left alone; delete it by hand once that build has ended"])
        assert not (root / key).exists() and held.is_dir() and other_host.is_dir()
    finally:
        os.close(fd)
    removed, kept = cache.remove(root, None)  # the lock is gone and so is its process: a dead build of this host
    assert [e["key"] for e in removed] == [held.name] and [e["key"] for e in kept] == [other_host.name]


# ---------------------------------------------------------------- item 3: empty arguments


@pytest.mark.parametrize("args,message", [
    (["cache", "clean", ""], "error: cache clean: '' is not a key; name an entry by its key as `qwen-sft cache ls` "
                             "shows it (its first characters are enough), or pass --all"),
    (["cache", "clean", " "], "error: cache clean: ' ' is not a key"),
    (["cache", "clean", "../x"], "error: cache clean: '../x' is not a key"),
    (["cache", "clean", "--dir", ""], "error: dir: empty path (an unset variable?); name a file or directory"),
    (["cache", "ls", "--dir", ""], "error: dir: empty path"),
])
def test_empty_or_odd_arguments_of_cache_are_refused(entry, capsys, monkeypatch, args, message):
    monkeypatch.setenv("QWEN_SFT_DATA_CACHE", str(entry.path.parent))  # what --dir "" fell back to
    code, out, err = cli(capsys, *args, *([] if "--dir" in args else ["--dir", entry.path.parent]))
    assert code == 2 and err.startswith(message) and out == "", err
    assert entry.path.is_dir()


def test_a_key_that_matches_nothing_is_said(entry, capsys):
    code, out, err = cli(capsys, "cache", "clean", "0123abc", "--dir", entry.path.parent)
    assert code == 1 and out.startswith("removed 0 entries") and "no entry's key starts with 0123abc" in err
    assert entry.path.is_dir()


# ---------------------------------------------------------------- item 20: what was removed, what could not be


def test_clean_says_what_it_could_not_remove(entry, capsys, monkeypatch):
    import errno

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(cache.shutil, "rmtree", read_only)
    code, out, _ = cli(capsys, "cache", "clean", "--dir", entry.path.parent, "--all")
    assert code == 1 and out.splitlines() == [
        f"removed 0 entries (0.0 MiB) from {entry.path.parent}",
        f"  not removed: {entry.path.name[:40]}  Read-only file system: {entry.path}"]
    assert entry.path.is_dir()


def test_a_linked_entry_is_not_counted_as_removed(entry, tmp_path, capsys):
    """`clean --all` on a cache whose entry is a symbolic link said `removed 1 entry` and removed nothing."""
    shared = tmp_path / "shared"
    shared.mkdir()
    entry.path.rename(shared / entry.path.name)
    entry.path.symlink_to(shared / entry.path.name)
    code, out, _ = cli(capsys, "cache", "clean", "--dir", entry.path.parent, "--all")
    assert code == 0 and out.startswith("removed 0 entries") and (shared / entry.path.name / "COMPLETE").is_file()


# ---------------------------------------------------------------- item 11: checked on every open


def flip_labels(path, n: int) -> None:
    labels = np.fromfile(path / "labels.bin", dtype="<i4")
    ids = np.fromfile(path / "input_ids.bin", dtype="<i4")
    prompt = np.flatnonzero(labels == -100)[:n]
    labels[prompt] = ids[prompt]  # prompt tokens made trained: same size, same structure
    labels.tofile(path / "labels.bin")


def swap_offsets(path) -> None:
    offsets = np.load(path / "offsets.npy")
    offsets[[2, 3]] = offsets[[3, 2]]
    np.save(path / "offsets.npy", offsets)


def out_of_range_id(path) -> None:
    ids = np.fromfile(path / "input_ids.bin", dtype="<i4")
    ids[5] = 10**9
    ids.tofile(path / "input_ids.bin")


@pytest.mark.parametrize("damage,file", [(lambda p: flip_labels(p, 300), "labels.bin"), (swap_offsets, "offsets.npy"),
                                         (out_of_range_id, "input_ids.bin")])
def test_same_size_damage_is_found_and_rebuilt(tokenizer, entry, tmp_path, capsys, damage, file):
    good = files_of(entry)
    sizes = {p.name: p.stat().st_size for p in entry.path.iterdir()}
    damage(entry.path)
    assert {p.name: p.stat().st_size for p in entry.path.iterdir()} == sizes  # the old size check saw nothing
    with pytest.raises(Damaged, match=rf"^{file}: its content does not match its checksum \(the block at byte 0\): "
                                      "changed after it was written$"):
        RowStore(entry.path)
    code, out, _ = cli(capsys, "cache", "ls", "--dir", entry.path.parent)
    assert code == 0 and f"damaged ({file}: its content does not match its checksum" in out and "  ok  " not in out
    lines = []
    rows, _ = encode_all(config(tmp_path), tokenizer, log=lines.append)
    assert lines[0] == (f"data cache: {entry.path} cannot be used ({file}: its content does not match its checksum "
                        "(the block at byte 0): changed after it was written); encoding again")
    assert rows.store.path == entry.path and files_of(rows.store) == good


def test_the_index_is_checked_even_where_checksums_are_not(entry):
    """A DataLoader worker started by spawn opens the store without its checksums (its parent checked them): a
    falling offset or one past the tokens is still refused, never a row read out of range mid-run."""
    swap_offsets(entry.path)
    with pytest.raises(Damaged, match="^the index does not match the token files$"):
        RowStore(entry.path, verify=False)


# ---------------------------------------------------------------- item 10: the rows of the bytes hashed


def test_a_data_file_rewritten_while_it_is_read_is_refused(tokenizer, tmp_path, monkeypatch):
    data = write_data(tmp_path / "data.jsonl", n=10)
    real = cache.iter_rows

    def rewritten(*args, **kw):
        for i, item in enumerate(real(*args, **kw)):
            if i == 3:  # an editor saving, a sync tool, a second `prepare --overwrite`
                text = data.read_text(encoding="utf-8")
                data.write_text(text.replace("a", "e"), encoding="utf-8")
                os.utime(data, ns=(0, os.stat(data).st_mtime_ns))
            yield item

    monkeypatch.setattr(cache, "iter_rows", rewritten)
    with pytest.raises(UserError, match=rf"^{data}: changed while its rows were being read; nothing was cached or "
                                        r"trained \(the rows would be of neither version\): run again once the data "
                                        "is written$"):
        encode_all(config(tmp_path), tokenizer, log=None)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_rewrite_that_keeps_size_and_mtime_is_caught_by_the_hash(tokenizer, tmp_path, monkeypatch):
    data = write_data(tmp_path / "data.jsonl", n=10)
    real = cache.iter_rows

    def rewritten(*args, **kw):
        for i, item in enumerate(real(*args, **kw)):
            if i == 3:
                st = os.stat(data)
                with open(data, "r+b") as f:  # in place: same inode, same size
                    f.seek(st.st_size // 2)
                    byte = f.read(1)
                    f.seek(st.st_size // 2)
                    f.write(b"e" if byte != b"e" else b"a")
                os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` / `rsync -t` keep it
            yield item

    monkeypatch.setattr(cache, "iter_rows", rewritten)
    with pytest.raises(UserError, match="changed while its rows were being read"):
        encode_all(config(tmp_path), tokenizer, log=None)
    assert list((tmp_path / "cache").iterdir()) == []
