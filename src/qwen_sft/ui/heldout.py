"""A run's validation split as a data file, then `qwen-sft eval` on it: the eval job's default held-out data.

    python -m qwen_sft.ui.heldout RUN_DIR -- EVAL_ARGS...   (in the workspace)

The split is made again exactly as training made it: the run's config.yaml, the tokenizer the adapter was saved with,
data.dataset.encode_and_split (the same reading, encoding, drops and seeded split; from the data cache when it holds
the rows).
The held-out rows are written, as read, to RUN_DIR/validation_split.jsonl (a file of the run's own, replaced whole);
then `python -m qwen_sft.cli eval EVAL_ARGS --data` that file runs in this process's place (exec: the same pid and
log). When the data changed since training (its report's counts differ from the run's data_report.json, or its hash
from a checkpoint's run record), nothing is evaluated: the split would not be the rows the run held out. (An edit that
keeps every count is caught only by the hash, which a run keeps in its checkpoints.)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SPLIT_FILE = "validation_split.jsonl"
# The data report's counts that tell the data training read from the data there now (data_report.json is the run's).
REPORT_KEYS = (
    "files",
    "rows_read",
    "rows_kept",
    "tokens",
    "trained_tokens",
    "length_percentiles",
    "train_rows",
    "val_rows",
)


def write_split(run_dir: Path) -> Path:
    from ..checkpoint import list_checkpoints, read_run_id, read_run_record
    from ..config import load_config
    from ..data.dataset import encode_and_split
    from ..errors import UserError
    from ..fileio import read_text, replacing
    from ..data.tokenizer import load_tokenizer
    from ..runfiles import tokenizer_dir

    cfg = load_config(run_dir / "config.yaml")
    if cfg.val_size <= 0:
        raise UserError(f"{run_dir}: val_size is 0, so the run held no rows out; choose a held-out data file")
    tok = load_tokenizer(tokenizer_dir(str(run_dir / "lora_adapters")))
    data = encode_and_split(cfg, tok, log=None)
    try:
        then = json.loads(read_text(run_dir / "data_report.json"))
    except (OSError, ValueError):
        then = None
    # The data as training read it: its report's counts (and a checkpoint's dataset hash, when one is left).
    changed = [f"{k} {then[k]} then, {data.report.get(k)} now" for k in REPORT_KEYS
               if isinstance(then, dict) and k in then and then[k] != data.report.get(k)]
    record = {}
    for ckpt in reversed(list_checkpoints(run_dir, read_run_id(run_dir))):
        try:
            record = read_run_record(ckpt)
            break
        except (OSError, ValueError, UserError):
            continue
    if record.get("dataset_hash", data.dataset_hash) != data.dataset_hash:
        changed.append("its files' hash differs from the checkpoint's record")
    if changed:
        raise UserError(f"{run_dir}: the data changed since training ({'; '.join(changed)}), so a split made now is "
                        "not "
                        "the rows the run held out; choose a held-out data file")
    out = run_dir / SPLIT_FILE
    with replacing(out) as f:
        for i in range(len(data.val)):
            f.write(json.dumps(data.val.conversation(i).to_json(), ensure_ascii=False) + "\n")
    print(f"validation split of {run_dir}: {len(data.val)} rows (val_size {cfg.val_size:g}, seed {cfg.seed}) -> {out}",
          flush=True)
    return out


def eval_argv(eval_args: list[str], split: Path) -> list[str]:
    """`qwen-sft eval EVAL_ARGS --data SPLIT` as a process runs it. The CLI sits above this module (it imports the
    UI), so the eval is run, not imported: no import loop."""
    return [sys.executable, "-m", "qwen_sft.cli", "eval", *eval_args, "--data", str(split)]


def main(argv: list[str]) -> int:
    from ..errors import UserError

    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m qwen_sft.ui.heldout RUN_DIR -- EVAL_ARGS...", file=sys.stderr)
        return 2
    try:
        split = write_split(Path(argv[0]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    # In this process's place: the same pid, session and log, so that the job's Stop and exit code are the eval's.
    argv = eval_argv(argv[2:], split)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
