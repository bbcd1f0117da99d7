"""Shared pytest fixtures."""

import atexit
import os
import shutil
import sys
import tempfile

import pytest

# Tests are offline: the hub is never asked (a hub id that is not cached fails at once, not after 5 retries over
# 23 s; subprocesses inherit it). Set before huggingface_hub is imported: it reads the variable once.
os.environ["HF_HUB_OFFLINE"] = "1"

# Each xdist worker computes on its share of the cores (subprocesses inherit it). With torch's default, every
# worker runs as many threads as there are cores: two workers on two cores, each with two OpenMP threads that spin
# waiting for each other, took 31 s for what takes 17 s with one thread each (two copies of a training test side by
# side, 2026-12-06).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _workers))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[_name] = _threads
    if "torch" in sys.modules:  # imported before this file (a plugin): tell it too
        sys.modules["torch"].set_num_threads(int(_threads))

# The tiny models (tests/tiny.py) of the whole session, xdist workers included (they inherit the variable the
# controlling process set here first), removed by the process that made the folder.
if "QWEN_SFT_TEST_MODELS" not in os.environ:
    os.environ["QWEN_SFT_TEST_MODELS"] = tempfile.mkdtemp(prefix="qwen-sft-test-models-")
    atexit.register(shutil.rmtree, os.environ["QWEN_SFT_TEST_MODELS"], ignore_errors=True)

# Encoded rows of every test go to a data cache of this session (subprocesses inherit it), never to ~/.cache.
os.environ["QWEN_SFT_DATA_CACHE"] = tempfile.mkdtemp(prefix="qwen-sft-test-data-cache-")
atexit.register(shutil.rmtree, os.environ["QWEN_SFT_DATA_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def session_tmpdir(tmp_path_factory):
    """Every temporary file of the session's own code and of the processes it starts (torchrun's logs, UI scratch
    folders, Chromium profiles, a supervisor killed by a test) goes under pytest's base folder, which pytest
    removes after a green session: nothing is left in /tmp. (An xdist worker ends without running atexit.)"""
    folder = tmp_path_factory.getbasetemp() / "tmp"
    folder.mkdir(exist_ok=True)
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    yield folder
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None


# ---- data layer: the real Qwen3 tokenizer + official chat template shipped with the package
# (loading it takes about a second, so one instance serves the whole session; do not mutate it).


@pytest.fixture(scope="session")
def tokenizer():
    from qwen_sft.assets import qwen3_tokenizer_dir
    from qwen_sft.data.tokenizer import load_tokenizer

    return load_tokenizer(str(qwen3_tokenizer_dir()))
