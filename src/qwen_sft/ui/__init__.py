"""`qwen-sft ui`: start, watch, stop, resume and compare training runs in a browser.

One Starlette app (application.py) with one router per area under /api/<area> (runs.py: runs, their live view,
stop, resume, compare; configs.py: the start form), one security layer in front of all of it
(security.py: Host / Origin checks, token, paths kept inside the workspace), and one static page with our
own JavaScript (static/). The UI is one more client of the package's functions: the form is validated by
config.load_config, a run is `qwen-sft train` in its own process (procs.py), and what the page shows is
read from the run directory (store.py reads the trainer's live record, live.py). See docs/ui.md.

This module stays light (the CLI builds its parser from it): starlette and uvicorn load in run_ui.
"""

from __future__ import annotations

import argparse

DEFAULT_PORT = 7870


def add_ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only); any other needs the printed token")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--workspace", default=".",
                   help="the directory the UI may read and write in: configs, data, models, runs (default: here)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another name the browser uses for this server (a Host header to accept); repeatable")
    p.add_argument("--require-token", action="store_true",
                   help="ask for the token on 127.0.0.1 too (a machine shared with other users)")
    p.add_argument("--allow-remote-code", action="store_true",
                   help="let the page set trust_remote_code (runs Python code shipped with a model)")


def run_ui(args) -> int:
    from .server import serve

    return serve(args)
