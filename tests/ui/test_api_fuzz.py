"""Fuzz over every API endpoint of `qwen-sft ui`: wrong types, huge, deep and odd-unicode values, in the query and
in the JSON body. Whatever is sent, the answer is a 2xx, or a 4xx with a message; never a 500.

The endpoints are read off the app's routes, and the names each one reads off its handler's source and the UI
functions it uses (`.get("name")`, `q["name"]`, ...), so a new endpoint or parameter is fuzzed without touching this
file. Two tests per endpoint: each name set to each of a list of odd values, alone and beside plausible values of
the others (depth: every known kind of bad value reaches every name); and hypothesis's mixes of names and values
(breadth). Requests go to a real server over a plain socket (an event stream is judged by its status line: it does
not end). While this module runs, subprocess.Popen starts `true`, so that a request the fuzzer makes valid (a run,
a job, a chat worker) starts nothing heavy.

CI runs a small fixed budget (derandomized); QWEN_SFT_FUZZ_EXAMPLES=N runs N random examples per endpoint."""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route

import qwen_sft.ui as ui_package
from qwen_sft.config import TrainConfig
from qwen_sft.ui.application import create_app
from qwen_sft.ui.context import Settings
from tests.ui.conftest import make_workspace, write_live
from tests.ui.test_api_hostile import served

LONG = os.environ.get("QWEN_SFT_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(LONG or 25), deadline=None, database=None, derandomize=not LONG,
                suppress_health_check=list(HealthCheck))
UI_SOURCE = Path(ui_package.__file__).parent


def api_endpoints() -> list[tuple[str, str, object]]:
    """(method, path, handler) of every route under /api, read off the app itself."""
    app = create_app(Settings(workspace=Path(os.getcwd()).resolve()))
    found = []

    def walk(routes, prefix: str) -> None:
        for r in routes:
            if isinstance(r, Mount):
                walk(r.routes, prefix + r.path)
            elif isinstance(r, Route) and (prefix + r.path).startswith("/api/"):
                found.extend((m, prefix + r.path, r.endpoint) for m in sorted(r.methods - {"HEAD"}))

    walk(app.routes, "")
    return found


# q.get("file"), body["model"], _number(sampling, "top_k"), _int(q, "start", ...)
READ = re.compile(r'\.get(?:list)?\("(\w+)"|\b(?:q|body|params|sampling)\["(\w+)"\]|\(\w+, "(\w+)"')


def names_read(fn, depth: int = 3, seen: set | None = None) -> set[str]:
    """The query / body names a handler reads: in its source, and in the UI's functions it names (called, or
    handed to a thread; by name, or through a module: configs.check), a few calls deep."""
    seen = seen if seen is not None else set()
    seen.add(fn)
    src = inspect.getsource(fn)
    names = {"".join(m) for m in READ.findall(src)}
    for keys in re.findall(r"for \w+ in \(([^)]*)\)", src):  # for k in ("cutoff_len", "train_on"): params[k]
        names |= set(re.findall(r'"(\w+)"', keys))
    if depth:
        scope = {**fn.__globals__, **inspect.getclosurevars(fn).nonlocals}
        for dotted in set(re.findall(r"\b[A-Za-z_][\w.]*", src)):  # called, or handed over (run_in_threadpool(f))
            head, *rest = dotted.split(".")
            target = scope.get(head)
            for part in rest:
                target = getattr(target, part, None)
            if inspect.isfunction(target) and target.__module__.startswith("qwen_sft.ui") and target not in seen:
                names |= names_read(target, depth - 1, seen)
    return names


def parameter_names() -> list[str]:
    """Every name the UI's routes read from a query or a body."""
    names = set()
    for f in UI_SOURCE.glob("*.py"):
        names |= {"".join(m) for m in READ.findall(f.read_text())}
    return sorted(names)


ENDPOINTS = api_endpoints()
NAMES = parameter_names()
FIELDS = [f for f in TrainConfig.__dataclass_fields__]
ODD = ["", " ", "\x00", "\ud800", "\udfff", "\udc80x", "a" * 300, "x/" * 2100, "../../..", "/etc/passwd", "~",
       "?,\n#", "NaN", "-1", "1e309", "0", "true", "null", "bundled:nope", "package:../x.yaml", "runs/a", "runs",
       "data/train.jsonl", "data", "sft/configs/tiny.yaml", "\u202e\u0000", "\U0001f600" * 50, "a/b", "Qwen/Qwen3-4B"]
DEEP = json.loads("[" * 200 + "]" * 200)
text = st.one_of(st.sampled_from(ODD), st.text(max_size=20), st.text(st.characters(categories=["Cs"]), max_size=2))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**200),
                   st.floats(), text)
value = st.one_of(
    scalar,
    st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                 st.dictionaries(st.sampled_from(NAMES + FIELDS), inner, max_size=3)),
                 max_leaves=8),
    st.dictionaries(st.sampled_from(FIELDS), text, max_size=4),  # a form's values, some of them odd
    st.sampled_from([DEEP, "x" * 2_000_000, ["data/train.jsonl"] * 500]),  # deep, huge
)
RAW_BODIES = [b"", b"[", b"null", b"[]", b'"\\ud800"', b"\xff\xfe\x00", b"{" * 50_000, b'{"a": NaN}', b'{"run": 1e999}',
              b"1" * 5000]


def bodies(names: list[str]):
    """JSON objects with some of `names` (each present or not), each a valid-looking or an odd value; raw bytes."""
    some = st.fixed_dictionaries({}, optional={n: value for n in names})
    return st.one_of(some.map(lambda d: json.dumps(d).encode()), st.sampled_from(RAW_BODIES))


def queries(names: list[str]):
    return st.fixed_dictionaries({}, optional={n: st.one_of(text, st.integers().map(str)) for n in names})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("fuzz") / "ws")
    # Runs to name (none of them running: a Stop must have nothing to signal).
    write_live(ws / "runs" / "a", [{"status": "running", "phase": "setup", "pid": 0, "config": {"run_name": "a"}},
                                   {"status": "finished", "step": 2, "metrics": {}}])
    write_live(ws / "runs" / "b", [{"status": "failed", "error": "x"}])
    with pytest.MonkeyPatch.context() as mp:
        real = subprocess.Popen
        mp.setattr(subprocess, "Popen", lambda argv, **kw: real(["true"], **kw))  # what a valid request starts
        app = create_app(Settings(workspace=ws, port=0, poll_s=0.05))
        with served(app) as url:
            yield url


def answer(url: str, method: str, path_query: str, body: bytes | None, kind: str) -> tuple[int, bytes]:
    """The status, and the body of an error (a 2xx may be an endless event stream: not read). A plain socket: a
    server that refuses a request before reading its body may close while the body is still being sent, and the
    answer is read all the same."""
    host, port = url.split("//")[1].split(":")
    head = f"{method} {path_query} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        try:
            sock.sendall(head.encode() + b"\r\n" + (body or b""))
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"no answer: {data!r}"
            data += chunk
        headers, rest = data.split(b"\r\n\r\n", 1)
        status = int(headers.split(b" ", 2)[1])
        if status < 400:
            return status, b""
        found = re.search(rb"(?i)content-length: (\d+)", headers)
        assert found, f"an answer without a length: {data[:500]!r}"
        length = int(found[1])
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, f"the answer ended early: {headers.decode(errors='replace')!r}, {rest[:300]!r}"
            rest += chunk
        return status, rest[:length]


def judged(status: int, body: bytes, what: str) -> None:
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    if status >= 400:
        error = json.loads(body).get("error")
        assert isinstance(error, str) and error.strip(), f"{what}: {status} without a message: {body[:300]!r}"


def encode_query(q: dict) -> str:
    # Lone surrogates go out as the bytes Python would write for them (invalid UTF-8): the server must cope.
    return "&".join(f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'))}" for k, v in q.items())


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the huge values, shown when one fails
@pytest.mark.parametrize("method,path,handler", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_any_request_gets_a_message_never_a_500(server, method, path, handler):
    names = sorted(names_read(handler)) or NAMES  # what it reads (none found: every name of the UI)

    @FUZZ
    @given(query=queries(names), body=bodies(names))
    def fuzz(query, body):
        kind = "application/octet-stream" if path == "/api/data/upload" else "application/json"
        status, error = answer(server, method, f"{path}?{encode_query(query)}", body if method != "GET" else None, kind)
        judged(status, error, f"{method} {path}?{query!r} {body[:200]!r}")

    fuzz()


# Each name an endpoint reads, alone and beside plausible values of the others, set to each of these.
ODD_JSON = [3, -1.5, True, None, [], [1, "a"], {"a": 1}, "\ud800", "\udc80", "a" * 300, "x/" * 2100, "", "\x00",
            "../..", json.loads("[" * 60 + "]" * 60), "x" * 2_000_000, 10**100, float("nan")]
ODD_QUERY = ["\ud800", "a" * 300, "x/" * 2100, "", "\x00", "../..", "-1", "1e309", "9" * 40, "nan", "[]"]
PLAUSIBLE = {
    "run": "runs/a",
    "base": "sft/configs/tiny.yaml",
    "values": {},
    "file": "data/train.jsonl",
    "files": ["data/train.jsonl"],
    "tokenizer": "bundled:hybrid",
    "messages": [{"role": "user", "content": "hi"}],
    "model": "runs/a",
    "panes": ["runs/a"],
    "data": ["data/train.jsonl"],
    "id": "nope",
    "q": "x",
}


@pytest.mark.slow
@pytest.mark.parametrize("method,path,handler", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_each_name_with_each_odd_value_gets_a_message_never_a_500(server, method, path, handler):
    names = sorted(names_read(handler))
    for name in names:
        base = {k: v for k, v in PLAUSIBLE.items() if k in names and (method != "GET" or isinstance(v, str))}
        for odd in ODD_QUERY if method == "GET" else ODD_JSON:
            for sent in ({name: odd}, {**base, name: odd}):
                if method == "GET":
                    status, error = answer(server, method, f"{path}?{encode_query(sent)}", None, "")
                else:
                    # The upload's names travel in the query (within what a request line may hold).
                    kind, query = "application/json", {}
                    if path == "/api/data/upload":
                        kind = "application/octet-stream"
                        query = {k: v for k, v in sent.items() if isinstance(v, str) and len(v) < 5000}
                    status, error = answer(
                        server, method, f"{path}?{encode_query(query)}", json.dumps(sent).encode(), kind
                    )
                judged(status, error, f"{method} {path} {name}={str(odd)[:60]!r} with {sorted(sent)}")


def test_the_fuzz_covers_every_endpoint_and_parameter():
    paths = {p for _, p, _ in ENDPOINTS}
    read = {p: names_read(h) for _, p, h in ENDPOINTS}
    assert {"base", "values"} <= read["/api/runs/start"] and {"run", "dtype", "overwrite"} <= read["/api/ops/merge"]
    assert {"messages", "sampling", "temperature", "model"} <= read["/api/chat/generate"]
    assert {"file", "tokenizer", "cutoff_len", "start"} <= read["/api/data/rows"] and "id" in read["/api/jobs/cancel"]
    assert {"/api/runs/start", "/api/configs/check", "/api/data/rows", "/api/chat/generate", "/api/ops/eval",
            "/api/jobs/cancel", "/api/session"} <= paths
    assert {"run", "base", "values", "file", "tokenizer", "panes", "id", "data", "sampling", "messages"} <= set(NAMES)
