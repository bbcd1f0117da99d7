"""`qwen-sft` subcommands: parse and dispatch only; heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

from . import argcheck
from .errors import UserError
from .fileio import blocking_file
from .launch import early_stops as launch_early_stops


# ---------------------------------------------------------------- prepare


def _check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an --output that would replace what the user has, or that cannot be written."""
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --output names the JSONL file to write")
    blocking = blocking_file(out.parent)
    if blocking is not None:
        raise UserError(f"{out}: cannot be created, {blocking} is a file, not a directory")
    if any(out.resolve() == p.resolve() for p in inputs):
        raise UserError(
            f"{out}: is also an --input; write the prepared rows to another file (the source would be lost)"
        )
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")


def _write(convs, out: Path) -> None:
    from .data.formats import write_jsonl

    try:
        write_jsonl(convs, out)
    except OSError as e:
        raise UserError(f"{out}: cannot write: {e.strerror or e}") from None


def cmd_prepare(args) -> int:
    from .data.formats import ColumnMap, expand_paths, load_dataset, parse_row

    argcheck.number("--num_samples", args.num_samples, least=1)
    out = Path(args.output)
    inputs = expand_paths(args.input) if args.input and args.format != "sample" else []
    _check_output(out, inputs, args.overwrite)
    if args.reasoning and args.format != "sample":
        raise UserError("--reasoning: only with --format sample (it makes sample rows with reasoning)")
    if args.format == "sample":
        from .samples import generate_samples

        convs = [
            parse_row(r, None) for r in generate_samples(args.num_samples, seed=args.seed, reasoning=args.reasoning)
        ]
        _write(convs, out)
        print(f"wrote {len(convs)} sample rows to {out}")
        return 0
    if not args.input:
        raise UserError("--input is required (a file, a directory, or several of them), or use --format sample")
    columns = ColumnMap(args.instruction_col, args.input_col, args.output_col, args.system_col)
    fmt = None if args.format in (None, "auto") else args.format
    loaded = load_dataset(inputs, fmt, columns, skip_invalid=args.skip_invalid)
    _write(loaded.conversations, out)
    formats = ", ".join(f"{k} {v}" for k, v in loaded.rows_per_format.items())
    print(f"wrote {len(loaded.conversations)} rows ({formats}) to {out}")
    if loaded.invalid:
        print(f"skipped {len(loaded.invalid)} invalid row(s):", file=sys.stderr)
        for p in loaded.invalid[:20]:
            print(f"  {p}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- check / inspect


def cmd_check(args) -> int:
    from .config import load_config
    from .data.dataset import encode_all
    from .data.report import check_thresholds, format_report, save_report
    from .data.tokenizer import named_tokenizer

    # A data path may contain '=': an existing path is data, other key=value items are overrides.
    data = [a for a in args.items if "=" not in a or _exists(a)]
    overrides = [a for a in args.items if a not in data]
    if not data:
        raise UserError("check: name at least one data file or directory")
    cfg = load_config(args.config, [f"dataset={json.dumps(data)}"] + overrides)
    out = Path(args.report or Path("sft/outputs/data_reports") / (Path(data[0]).stem + ".json"))
    from .data.formats import expand_paths

    if any(out.resolve() == p.resolve() for p in expand_paths(data)):
        raise UserError(f"{out}: is one of the data files being checked; save the report elsewhere with --report")
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --report names the JSON file to write")
    if out.exists() and not args.overwrite and not _is_data_report(out):
        raise UserError(f"{out}: exists and is not a data report written by check; pass --overwrite to replace it, "
                        "or save the report elsewhere with --report")
    tok = named_tokenizer(args.tokenizer or (cfg.model_name_or_path if args.config else None))
    _, report = encode_all(cfg, tok)
    print(format_report(report))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_report(report, out)
    except OSError as e:
        raise UserError(f"{out}: cannot write the report: {e.strerror or e}") from None
    print(f"report saved to {out}")
    problems = check_thresholds(report, cfg)
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


def _is_data_report(path: Path) -> bool:
    """A file `check` wrote (so it may replace it): a JSON object with the data report's own keys."""
    try:
        with open(path, "rb") as f:
            report = json.loads(f.read(64 * 2**20))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(report, dict) and {"rows_read", "rows_kept", "length_percentiles"} <= report.keys()


def cmd_inspect(args) -> int:
    from .config import load_config
    from .data.dataset import encode_all
    from .data.encode import IGNORE_INDEX
    from .data.tokenizer import named_tokenizer

    argcheck.number("--n", args.n, least=1)
    cfg = load_config(args.config, args.overrides)
    tok = named_tokenizer(args.tokenizer or cfg.model_name_or_path)
    rows, report = encode_all(cfg, tok)
    rows = rows[: args.n]
    if args.json:
        for r in rows:
            print(json.dumps({"input_ids": r.input_ids.tolist(), "labels": r.labels.tolist()}))
        return 0
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    total = report.get("sequences", report["rows_kept"])  # a row may train more than one sequence (data/encode.py)
    console.print(f"[bold]{len(rows)} of {total} encoded sequences ({report['rows_kept']} rows)[/] — "
                  "[green]green = trained[/], grey = prompt side")
    for r in rows:
        text = Text()
        for tid, lab in zip(r.input_ids, r.labels):
            piece = tok.decode([tid])
            text.append(piece, style="bold green" if lab != IGNORE_INDEX else "grey50")
        console.rule(
            f"{r.source}  tokens {len(r.input_ids)}, trained {r.num_trained}"
            + ("  [truncated]" if r.truncated else "")
            + ("  [an earlier reply, after its own served prompt]" if r.continues_row else "")
        )
        console.print(text)
    return 0


# ---------------------------------------------------------------- cache


def cmd_cache(args) -> int:
    from .data import cache

    if args.action == "build":
        from .config import load_config
        from .data.dataset import encode_all
        from .data.report import format_report
        from .data.tokenizer import named_tokenizer

        items = args.config_or_keys
        if not items:
            raise UserError("cache build: name a training config (its dataset, tokenizer and encoding options apply)")
        config = None if "=" in items[0] and not _exists(items[0]) else items[0]  # key=value only: no file
        cfg = load_config(config, items[1:] if config else items)
        tok = named_tokenizer(cfg.model_name_or_path)
        _, report = encode_all(cfg, tok)
        print(format_report(report))
        return 0
    root = Path(args.dir).expanduser() if args.dir else cache.cache_root("auto")
    if args.action == "ls":
        found = cache.entries(root)
        print(f"data cache {root}: {len(found)} entr{'y' if len(found) == 1 else 'ies'}, "
              f"{sum(e['bytes'] for e in found) / 2**20:.1f} MiB")
        for e in found:
            line = f"  {e['key'][:12]}  {e['bytes'] / 2**20:9.1f} MiB  {e['status']}"
            if e["status"] == "ok":
                opts = ", ".join(f"{k}={v}" for k, v in e["encode_options"].items())
                files = e["files"][0] + (f" (+{len(e['files']) - 1} more)" if len(e["files"]) > 1 else "")
                line += f"  {e['rows']} rows, {e['tokens']} tokens, {e['created']}  {files}  [{opts}]"
            print(line)
        return 0
    if args.config_or_keys and args.all:
        raise UserError("cache clean: name keys or --all, not both")
    for key in args.config_or_keys:  # "" would start every key: clean "" removed every entry
        if not key or len(key) > 64 or any(c not in "0123456789abcdef" for c in key):
            raise UserError(f"cache clean: {key!r} is not a key; name an entry by its key as `qwen-sft cache ls` shows "
                            "it (its first characters are enough), or pass --all")
    removed, kept = cache.remove(root, args.config_or_keys, everything=args.all)
    print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
          f"({sum(e['bytes'] for e in removed) / 2**20:.1f} MiB) from {root}")
    for e in kept:
        print(f"  not removed: {e['key'][:40]}  {e['reason']}")
    unmatched = [k for k in args.config_or_keys if not any(e["key"].startswith(k) for e in removed + kept)]
    for k in unmatched:
        print(f"  no entry's key starts with {k} (qwen-sft cache ls lists them)", file=sys.stderr)
    return 1 if unmatched or any(e["removable"] for e in kept) else 0


# ---------------------------------------------------------------- train / demo


def cmd_train(args) -> int:
    from .config import load_config
    from .launch import maybe_relaunch

    if args.config and "=" in args.config and not _exists(args.config):
        # `qwen-sft train key=value ...` without a config file: every argument is an override.
        args.config, args.overrides = None, [args.config, *args.overrides]
    argcheck.number("--nproc", args.nproc, least=1)
    cfg = load_config(args.config, args.overrides)
    relaunched = maybe_relaunch(args.nproc, ["train", args.config or "", *args.overrides])
    if relaunched is not None:
        return relaunched
    from .errors import StopRequested
    from .launch import report_stop
    from .plan.gate import before_training
    from .train import train

    try:
        train(cfg, before_training=before_training)
    except StopRequested as e:
        if not report_stop():
            raise
        print(f"error: {e}", file=sys.stderr)  # exit 0 so that torchrun ends quietly; the supervisor exits 3
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    argcheck.number("--steps", args.steps, least=1)
    workdir = Path(args.workdir)
    blocking = blocking_file(workdir)
    if blocking is not None:
        raise UserError(f"--workdir {workdir}: {blocking} is a file, not a directory; pass another --workdir")
    return run_demo(workdir, steps=args.steps, template=args.template)


# ---------------------------------------------------------------- main


def build_parser(commands: set[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; commands: the subcommands whose arguments to define (None: all). merge, chat and eval
    define theirs in their own modules, which import torch: they are filled in only when named, so that `--help`
    and the light commands (prepare, check, cache, ui, ...) start without torch."""
    wanted = (lambda name: True) if commands is None else commands.__contains__
    p = argparse.ArgumentParser(prog="qwen-sft", description="LoRA fine-tuning for Qwen3 chat models.")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("prepare", help="CSV/JSONL/JSON (or generated samples) -> validated training JSONL")
    sp.add_argument("--input", nargs="+", help="data file(s) or directory")
    sp.add_argument("--output", required=True)
    from .config import choices

    formats = [f for f in choices("data_format") if f is not None]  # the config's data_format, as prepare reads them
    sp.add_argument("--format", default=None, choices=["auto", "sample", *formats])
    sp.add_argument("--instruction_col", default="instruction")
    sp.add_argument("--input_col", default="input")
    sp.add_argument("--output_col", default="output")
    sp.add_argument("--system_col", default="system")
    sp.add_argument("--num_samples", type=int, default=100)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--reasoning", action="store_true",
                    help="--format sample: every row carries worked reasoning (data for a thinking model)")
    sp.add_argument("--skip_invalid", action="store_true", help="drop invalid rows and report the count")
    sp.add_argument("--overwrite", action="store_true")
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("check", help="data report: counts, drops, truncation, lengths; fails on thresholds")
    sp.add_argument("items", nargs="+", metavar="DATA | key=value", help="data files / directories, then config "
                                                                         "overrides")
    sp.add_argument("--config", help="a training config (its cutoff_len, thinking mode and thresholds apply)")
    sp.add_argument("--tokenizer", help="tokenizer dir or hub id (default: the config's model, else the bundled Qwen3 "
                                        "tokenizer)")
    sp.add_argument("--report", help="where to save the JSON report (replaces only a report check wrote)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --report file of any kind")
    sp.set_defaults(func=cmd_check, overrides_dest="items")

    sp = sub.add_parser("inspect", help="show encoded rows with trained tokens highlighted")
    sp.add_argument("config")
    sp.add_argument("overrides", nargs="*", default=[], metavar="key=value")
    sp.add_argument("--n", type=int, default=3)
    sp.add_argument("--json", action="store_true", help='one {"input_ids", "labels"} object per row (labels -100 where '
                                                        'untrained)')
    sp.add_argument("--tokenizer", help="tokenizer dir or hub id (default: the config's model_name_or_path)")
    sp.set_defaults(func=cmd_inspect, overrides_dest="overrides")

    sp = sub.add_parser("cache", help="the data cache of encoded rows: build ahead of time, list, clean",
                        description="build CONFIG [key=value ...]: encode the config's dataset into the cache now "
                        "(what train, check and inspect would do first). ls: list entries. clean [KEY ...]: remove "
                        "the entries whose key starts with KEY; with no KEY, the unfinished and damaged ones; --all: "
                        "all.")
    sp.add_argument("action", choices=["build", "ls", "clean"])
    sp.add_argument("config_or_keys", nargs="*", default=[], metavar="CONFIG | KEY",
                    help="build: a training config, then key=value overrides; clean: key prefixes")
    sp.add_argument("--dir", help="the cache directory (default: data_cache_dir auto: $QWEN_SFT_DATA_CACHE, else "
                    "$QWEN_SFT_CACHE/data, else ~/.cache/qwen_sft/data)")
    sp.add_argument("--all", action="store_true", help="clean: remove every entry")
    sp.set_defaults(func=cmd_cache, overrides_dest="config_or_keys")

    sp = sub.add_parser("train", help="LoRA training from a YAML config")
    sp.add_argument("config", nargs="?")
    sp.add_argument("overrides", nargs="*", default=[], metavar="key=value")
    sp.add_argument("--nproc", type=int, default=None, help="processes (GPUs) to launch; default: all visible GPUs")
    sp.set_defaults(func=cmd_train, overrides_dest="overrides")

    sp = sub.add_parser("plan", help="before a run: its peak GPU memory, speed and wall time, and what would make it "
                                     "fit")
    if wanted("plan"):
        from .plan.command import add_plan_args, run_plan

        add_plan_args(sp)
        sp.set_defaults(func=run_plan, overrides_dest="overrides")

    sp = sub.add_parser("merge", help="merge a LoRA adapter into its base model (float32 merge, atomic write)")
    if wanted("merge"):
        from .merge import add_merge_args, run_merge

        add_merge_args(sp)
        sp.set_defaults(func=run_merge)

    sp = sub.add_parser("chat", help="chat with a merged model or an adapter")
    if wanted("chat"):
        from .generate import add_chat_args, run_chat

        add_chat_args(sp)
        sp.set_defaults(func=run_chat)

    sp = sub.add_parser(
        "eval", help="held-out loss, base vs tuned generations, metrics, behavior rates, template check"
    )
    if wanted("eval"):
        from .evaluation.command import add_eval_args, run_eval

        add_eval_args(sp)
        sp.set_defaults(func=run_eval)

    from .ui import add_ui_args, run_ui
    sp = sub.add_parser("ui", help="runs, data (token by token), chat, merge and eval in a browser (docs/ui.md)")
    add_ui_args(sp)
    sp.set_defaults(func=run_ui)

    sp = sub.add_parser("demo", help="offline end-to-end demo on a tiny Qwen3 or Qwen3.5 stand-in (CPU, minutes)")
    sp.add_argument("--workdir", default="sft/outputs/demo")
    sp.add_argument("--steps", type=int, default=None,
                    help="train exactly N steps (default: until the loss is at most 0.02, at most 400 steps)")
    sp.add_argument("--template", default="hybrid", choices=["hybrid", "instruct-2507", "thinking-2507", "qwen3.5"],
                    help="the checkpoint family the stand-in plays: its chat template, config and sampling defaults "
                         "(qwen3.5: a Qwen3.5-4B-shaped checkpoint, vision tower and MTP head included)")
    sp.set_defaults(func=cmd_demo)
    return p


# Arguments of any subcommand that name a file or directory (and so may not be empty).
PATH_ARGS = ("input", "output", "items", "config", "tokenizer", "report", "workdir", "adapter", "lora_adapter",
             "base_model", "output_dir", "model", "data", "out", "base", "dir")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="qwen-sft: %(message)s")
    # huggingface_hub prints its warnings (e.g. each retry of an unreachable hub) with its own handler:
    # not a second time through ours.
    logging.getLogger("huggingface_hub").propagate = False
    # peft still reads transformers' old `is_gradient_checkpointing` name: noise for our users, not theirs to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    argv = sys.argv[1:] if argv is None else list(argv)
    # `train` catches a stop from here on (before its imports): a Stop right after the start is a clean stop.
    early = launch_early_stops() if argv[:1] == ["train"] else nullcontext()
    with early:
        return _main(argv)


def _main(argv: list[str]) -> int:
    parser = build_parser({next((str(a) for a in argv if not str(a).startswith("-")), "")})
    args, extra = parser.parse_known_args(argv)
    dest = getattr(args, "overrides_dest", None)
    if extra and dest and all("=" in e and not e.startswith("-") for e in extra):
        # key=value after an option (`check DATA --config C key=value`): argparse stops there
        getattr(args, dest).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        for dest in PATH_ARGS:  # an unset variable must not mean "this directory"
            argcheck.path(dest, _paths(getattr(args, dest, None)))
        code = args.func(args) or 0
        sys.stdout.flush()  # a reader that left (`| head`) shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        _stdout_to_devnull()
        return 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _exists(path: str) -> bool:
    """Path(path).exists(), False for a name the system cannot even look up (over 255 bytes, a NUL)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _paths(value):
    """The paths of an argument that may also hold key=value overrides (`train run_name=x`, `check DATA k=v`): an
    override is the config's to check, by its key, not a path named `config` or `items`."""
    override = lambda v: isinstance(v, str) and "=" in v and not _exists(v)  # noqa: E731
    return [v for v in value if not override(v)] if isinstance(value, list) else None if override(value) else value


def _stdout_to_devnull() -> None:
    """After a broken pipe: what is still buffered for stdout goes nowhere (Python flushes it at exit, which would
    raise again and print 'Exception ignored ... BrokenPipeError')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture)
        pass


if __name__ == "__main__":
    sys.exit(main())
