"""The tiny Qwen3 stand-in, built once per test process (about 2 s) and shared by the tests."""

import functools
import tempfile
from pathlib import Path

from qwen_sft.model import build_tiny_model


@functools.cache
def tiny_model_dir(variant: str = "hybrid", tied: bool = True) -> Path:
    """variant: hybrid | instruct-2507 | thinking-2507 (its chat template); tied: embeddings shared with lm_head."""
    return build_tiny_model(Path(tempfile.mkdtemp(prefix="qwen-sft-tiny-")) / f"tiny-qwen3-{variant}", seed=0,
                            variant=variant, tied=tied)
