"""The tiny Qwen3 stand-in, built once per test process (about 2 s) and shared by the tests."""

import functools
import tempfile
from pathlib import Path

from qwen_sft.model import build_tiny_model


@functools.cache
def tiny_model_dir() -> Path:
    return build_tiny_model(Path(tempfile.mkdtemp(prefix="qwen-sft-tiny-")) / "tiny-qwen3", seed=0)
