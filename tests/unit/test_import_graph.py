"""The package's import graph (#25): no loop, and nothing below the CLI imports it. Imports are read from the source
with ast, those inside functions included (a lazy import is still a dependency)."""

import ast
from pathlib import Path

import qwen_sft

PACKAGE = Path(qwen_sft.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return found


def imports(name: str, is_package: bool, source: str, known: dict) -> set[str]:
    """The package's modules that module `name` (of this source) imports anywhere in it."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t not in known and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in known and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path.name == "__init__.py", path.read_text(encoding="utf-8"), known)
            for name, path in known.items()}


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_loop():
    assert loops(graph()) == []


def test_nothing_imports_the_cli():
    assert sorted(m for m, targets in graph().items() if "qwen_sft.cli" in targets) == []


def test_the_checker_sees_a_lazy_import_of_the_cli_and_the_loop_it_makes():
    # ui/models.py before #25: `from ..cli import _tokenizer` inside a method; cli imports ui at module level.
    known = modules()
    lazy = "class T:\n    def load(self):\n        from ..cli import _tokenizer\n        return _tokenizer\n"
    assert imports("qwen_sft.ui.models", False, lazy, known) == {"qwen_sft.cli"}
    assert imports("qwen_sft.cli", False, "from .ui import add_ui_args\nfrom . import argcheck\n", known) == \
        {"qwen_sft.ui", "qwen_sft.argcheck"}
    edges = {**graph(), "qwen_sft.ui.models": graph()["qwen_sft.ui.models"] | {"qwen_sft.cli"}}
    assert any({"qwen_sft.cli", "qwen_sft.ui.models"} <= set(loop) for loop in loops(edges))


def test_one_pid_check():
    # runlock.pid_alive is the package's one "does this pid run" check (the data cache and live.py had copies).
    hits = [f"{p.relative_to(PACKAGE)}" for p in PACKAGE.rglob("*.py")
            if "os.kill(pid, 0)" in p.read_text(encoding="utf-8")]
    assert hits == ["runlock.py"]
