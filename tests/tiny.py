"""The tiny stand-ins (Qwen3, and every family of families.py), built once per test session (a few seconds each)
and shared by the tests: the first process that asks builds one into the session's folder (conftest.py sets
QWEN_SFT_TEST_MODELS; the xdist workers inherit it), under a lock the others wait on, then every process reads it.
Tests never write into these folders (a test that needs to change one copies it)."""

import fcntl
import functools
import os
import tempfile
from pathlib import Path

from qwen_sft.model import build_tiny_model

DONE = "BUILT"  # written last: a folder without it is a build that died (rebuilt)


def _shared(name: str, build) -> Path:
    root = Path(os.environ.get("QWEN_SFT_TEST_MODELS") or tempfile.mkdtemp(prefix="qwen-sft-tiny-"))
    out = root / name
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (out / DONE).exists():
            built = build(out)
            assert built == out, (built, out)
            (out / DONE).write_text("")
    return out


@functools.cache
def tiny_model_dir(variant: str = "hybrid", tied: bool = True) -> Path:
    """variant: hybrid | instruct-2507 | thinking-2507 (its chat template); tied: embeddings shared with lm_head."""
    return _shared(f"tiny-qwen3-{variant}{'' if tied else '-untied'}",
                   lambda out: build_tiny_model(out, seed=0, variant=variant, tied=tied))


@functools.cache
def standin_dir(family_name: str, **variant) -> Path:
    """The tiny stand-in of a families.FAMILIES row (its `standin` builder with these keywords), built once."""
    from qwen_sft.families import FAMILIES

    fam = next(f for f in FAMILIES if f.name == family_name)
    tag = "-".join(f"{k}-{v}" for k, v in sorted(variant.items())) or "default"
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in f"standin-{family_name}-{tag}")
    return _shared(safe, lambda out: fam.standin(out, seed=0, **variant))
