"""`qwen-sft eval MODEL_OR_ADAPTER --data D` (docs/evaluation.md): its arguments, the --fail_below / --fail_above
thresholds, and the run: template fidelity first, then both models' passes, the report files and the table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.fidelity import assert_template_fidelity
from ..errors import UserError
from ..runfiles import tokenizer_dir
from .metrics import HIGHER_IS_BETTER, LOWER_IS_BETTER
from .passes import DEFAULT_MAX_NEW_TOKENS, evaluate_model
from .report import check_out_dir, default_out_dir, print_table, write_report

DEFAULT_N = 50


def parse_thresholds(fail_below: list[str] | None, fail_above: list[str] | None) -> dict[str, float]:
    """{'stop_rate': 0.9, ...} from key=value items; a key on the wrong side (or unknown) is a UserError."""
    out = {}
    for flag, items, allowed, other in (("--fail_below", fail_below, HIGHER_IS_BETTER, LOWER_IS_BETTER),
                                        ("--fail_above", fail_above, LOWER_IS_BETTER, HIGHER_IS_BETTER)):
        for item in items or []:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                raise UserError(f"{flag} {item}: expected key=value, e.g. stop_rate=0.9")
            if key in other:
                raise UserError(f"{flag} {key}: {key} is {'lower' if key in LOWER_IS_BETTER else 'higher'}-is-better; "
                                f"use {'--fail_above' if flag == '--fail_below' else '--fail_below'}")
            if key not in allowed:
                raise UserError(f"{flag} {key}: unknown; choose from {', '.join(allowed)}")
            try:
                out[key] = float(value)
            except ValueError:
                raise UserError(f"{flag} {item}: {value!r} is not a number") from None
    return out


def check_thresholds(values: dict[str, float | None], thresholds: dict[str, float]) -> tuple[list[str], list[str]]:
    """(failures, notes): a rate below its --fail_below (above its --fail_above) fails; a rate that applies
    to no row (n/a) cannot fail and is named in notes."""
    failures, notes = [], []
    for key, limit in thresholds.items():
        v = values.get(key)
        if v is None:
            notes.append(f"{key}: no row applies (n/a): threshold {limit:g} not checked")
        elif key in HIGHER_IS_BETTER and v < limit:
            failures.append(f"{key} {v:.4g} < {limit:g} (--fail_below)")
        elif key in LOWER_IS_BETTER and v > limit:
            failures.append(f"{key} {v:.4g} > {limit:g} (--fail_above)")
    return failures, notes


def add_eval_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "model", metavar="MODEL_OR_ADAPTER", help="a merged model directory or a LoRA adapter directory"
    )
    parser.add_argument("--data", nargs="+", required=True, help="held-out data file(s) or directory (any format "
                        "prepare reads); each row's last assistant reply is the reference")
    parser.add_argument("--base", help="base model to compare with (default: the adapter's base, or base_model in "
                        "the merged model's qwen_sft.json)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="evaluate the first N rows (0: all)")
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="greedy token budget per "
                                                                                           "reply")
    parser.add_argument("--out", help="output directory (default: sft/outputs/eval/{run}/)")
    parser.add_argument("--fail_below", nargs="+", default=[], metavar="KEY=VALUE",
                        help="exit 1 when a tuned-model value is below: " + ", ".join(HIGHER_IS_BETTER))
    parser.add_argument("--fail_above", nargs="+", default=[], metavar="KEY=VALUE",
                        help="exit 1 when a tuned-model value is above: " + ", ".join(LOWER_IS_BETTER))
    parser.add_argument("--enable_thinking", action=argparse.BooleanOptionalAction, default=None,
                        help="thinking mode (default: qwen_sft.json's; must agree with it when there is one)")
    parser.add_argument("--fidelity_only", action="store_true",
                        help="only run the template fidelity check (no model is loaded)")
    return parser


def run_eval(args: argparse.Namespace) -> int:
    from ..data.formats import load_dataset

    if args.max_new_tokens < 1:
        raise UserError("--max_new_tokens must be at least 1")
    if args.n < 0:
        raise UserError("--n must be 0 (all rows) or more")
    thresholds = parse_thresholds(args.fail_below, args.fail_above)
    if not args.fidelity_only:  # before the slow part
        check_out_dir(Path(args.out) if args.out else default_out_dir(args.model))
    loaded = load_dataset(args.data)
    convs = loaded.conversations[: args.n] if args.n else loaded.conversations
    assert_template_fidelity(args.model, convs, args.enable_thinking)
    print(f"template fidelity: {len(convs)} rows OK (prompt and trained reply tokens match the chat template "
          f"of {tokenizer_dir(args.model)})", flush=True)
    if args.fidelity_only:
        return 0
    report = evaluate_model(args.model, convs, base=args.base, enable_thinking=args.enable_thinking,
                            max_new_tokens=args.max_new_tokens, data=loaded.files,
                            rows_in_data=len(loaded.conversations))
    report.thresholds = thresholds
    report.failures, notes = check_thresholds(report.tuned.values(), thresholds)
    paths = write_report(report, Path(args.out) if args.out else default_out_dir(args.model))
    print_table(report)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {paths['report']}\ngenerations: {paths['generations']}\nmetrics: {paths['metrics']}", flush=True)
    for f in report.failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if report.failures else 0
