"""The tiny stand-ins (Qwen3, and every family of families.py), built once per test process (a few seconds) and
shared by the tests."""

import functools
import tempfile
from pathlib import Path

from qwen_sft.model import build_tiny_model


@functools.cache
def tiny_model_dir(variant: str = "hybrid", tied: bool = True) -> Path:
    """variant: hybrid | instruct-2507 | thinking-2507 (its chat template); tied: embeddings shared with lm_head."""
    return build_tiny_model(Path(tempfile.mkdtemp(prefix="qwen-sft-tiny-")) / f"tiny-qwen3-{variant}", seed=0,
                            variant=variant, tied=tied)


@functools.cache
def standin_dir(family_name: str, **variant) -> Path:
    """The tiny stand-in of a families.FAMILIES row (its `standin` builder with these keywords), built once."""
    from qwen_sft.families import FAMILIES

    fam = next(f for f in FAMILIES if f.name == family_name)
    tag = "-".join(f"{k}-{v}" for k, v in sorted(variant.items())) or "default"
    return fam.standin(Path(tempfile.mkdtemp(prefix="qwen-sft-standin-")) / tag, seed=0, **variant)
