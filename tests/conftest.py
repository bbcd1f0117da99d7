"""Shared pytest fixtures."""

import atexit
import os
import shutil
import tempfile

import pytest

# Tests are offline: the hub is never asked (a hub id that is not cached fails at once, not after 5 retries over
# 23 s; subprocesses inherit it). Set before huggingface_hub is imported: it reads the variable once.
os.environ["HF_HUB_OFFLINE"] = "1"

# The tiny models (tests/tiny.py) of the whole session, xdist workers included (they inherit the variable the
# controlling process set here first), removed by the process that made the folder.
if "QWEN_SFT_TEST_MODELS" not in os.environ:
    os.environ["QWEN_SFT_TEST_MODELS"] = tempfile.mkdtemp(prefix="qwen-sft-test-models-")
    atexit.register(shutil.rmtree, os.environ["QWEN_SFT_TEST_MODELS"], ignore_errors=True)

# Encoded rows of every test go to a data cache of this session (subprocesses inherit it), never to ~/.cache.
os.environ["QWEN_SFT_DATA_CACHE"] = tempfile.mkdtemp(prefix="qwen-sft-test-data-cache-")
atexit.register(shutil.rmtree, os.environ["QWEN_SFT_DATA_CACHE"], ignore_errors=True)

# ---- data layer: the real Qwen3 tokenizer + official chat template shipped with the package
# (loading it takes about a second, so one instance serves the whole session; do not mutate it).


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from qwen_sft.assets import qwen3_tokenizer_dir

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
