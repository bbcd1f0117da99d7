"""`qwen-sft ui`: settings from the command line, the socket, the printed URL, uvicorn."""

from __future__ import annotations

import errno
import secrets
import signal
import socket
import sys
from pathlib import Path

from ..errors import UserError
from .context import Settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")


def url_host(name: str) -> str:
    return f"[{name}]" if ":" in name else name


def allowed_hosts(host: str, port: int, extra: list[str]) -> set[str]:
    """The Host headers to answer: loopback names, the bound address (every name of this machine when bound to
    all addresses), and --allowed-host names."""
    names = {"localhost", "127.0.0.1", "::1"}
    if host in WILDCARD:
        names |= {socket.gethostname(), socket.getfqdn()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    elif host not in LOOPBACK:
        names.add(host)
    names |= set(extra)
    hosts = {f"{url_host(n)}:{port}".lower() for n in names}
    return hosts | ({url_host(n).lower() for n in names} if port == 80 else set())


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)  # from now on a browser that opens the printed URL waits in the backlog, not refused
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use; choose another with --port N (0: any free port)") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(args) -> int:
    import uvicorn

    from .application import create_app

    workspace = Path(args.workspace).expanduser().resolve()
    if not workspace.is_dir():
        raise UserError(f"--workspace {args.workspace}: not a directory")
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    needs_token = args.host not in LOOPBACK or args.require_token
    settings = Settings(workspace=workspace, host=args.host, port=port,
                        token=secrets.token_urlsafe(32) if needs_token else None,
                        allowed_hosts=allowed_hosts(args.host, port, args.allowed_host),
                        allow_remote_code=args.allow_remote_code)
    shown = socket.gethostname() if args.host in WILDCARD else url_host(args.host)
    url = f"http://{shown}:{port}/" + (f"?token={settings.token}" if settings.token else "")
    print(f"qwen-sft ui: workspace {workspace}", flush=True)
    if settings.token:
        print("  the token below is shown once; anyone with this URL can start and stop runs", flush=True)
    print(f"  open {url}", flush=True)
    app = create_app(settings)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            server_header=False, proxy_headers=False, timeout_graceful_shutdown=1)
    # uvicorn shuts down on SIGTERM, then raises it again to the handler it found: with the default one the process
    # would die there, before atexit removes the scratch folders (ui/data.py, ui/chat.py). Exit as a shell reports it.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    uvicorn.Server(config).run(sockets=[sock])
    return 0
