"""`qwen-sft ARGS` in the test's own process: cli.main(argv) in a working directory, with what it prints captured.
A subprocess costs a fresh interpreter and torch's import (seconds each); the tests that are about the process
itself (signals, exit of a killed run, the console script) keep theirs."""

from __future__ import annotations

import os
import subprocess


def run_cli(capsys, *args, cwd=None) -> subprocess.CompletedProcess:
    """main([str(a) for a in args]) in cwd (then back): returncode, stdout and stderr as a user would see them."""
    from qwen_sft.cli import main

    return _in_process(capsys, cwd, lambda: main([str(a) for a in args]), args)


def run_script(capsys, path, *args, cwd=None) -> subprocess.CompletedProcess:
    """`python PATH ARGS` (a seed script, sft/scripts/*.py) in the test's own process, as run_cli runs a command."""
    import runpy
    import sys

    def script():
        argv, sys.argv = sys.argv, [str(path), *(str(a) for a in args)]
        try:
            runpy.run_path(str(path), run_name="__main__")
        finally:
            sys.argv = argv

    return _in_process(capsys, cwd, script, args)


def _in_process(capsys, cwd, call, args) -> subprocess.CompletedProcess:
    """call() in cwd (then back), its exit code (SystemExit's, else its return, None as 0) and what it printed."""
    capsys.readouterr()  # what came before is not this command's
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        try:
            code = call() or 0
        except SystemExit as e:  # argparse's usage errors and --help, a script's sys.exit
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)
