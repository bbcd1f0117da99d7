"""Shared pytest fixtures."""

import pytest

# ---- data layer: the real Qwen3 tokenizer + official chat template shipped with the package
# (loading it takes about a second, so one instance serves the whole session; do not mutate it).


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from qwen_sft.assets import qwen3_tokenizer_dir

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
