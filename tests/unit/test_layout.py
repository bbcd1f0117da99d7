"""docs/design.md's layout tree names every module of the package, each where it is (#25)."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def tree_paths() -> set[str]:
    """The paths the tree in docs/design.md's Layout section names (folders from indentation)."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    paths, folders = set(), []
    for line in block.splitlines()[1:]:
        m = re.match(r"( *)(\S+)", line)
        if not m or m.group(2) == "src/qwen_sft/":
            continue
        depth = len(m.group(1)) // 2 - 1
        folders = folders[:depth]
        name = m.group(2)
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join(folders + [name]))
    return paths


def test_the_layout_tree_names_every_module_where_it_is():
    package = ROOT / "src" / "qwen_sft"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"}
    named = tree_paths()
    assert sorted(modules - named) == [], "modules the tree in docs/design.md does not name"
    assert sorted(named - modules) == [], "names in the tree that are no module"
