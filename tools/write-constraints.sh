#!/usr/bin/env bash
# Write constraints.txt from a virtual environment whose test suite passed: every installed release pinned for
# that Python (a marker per line: another Python resolves the newest allowed releases, untested), except the
# package itself and torch (tools/setup.sh installs torch apart: TORCH_SPEC, or the CUDA build a GPU needs).
#   bash tools/write-constraints.sh [.venv/bin/python]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYBIN="${1:-.venv/bin/python}"
"$PYBIN" - <<'PY' > constraints.txt
import importlib.metadata as md, platform, time

skip = {"qwen-sft", "torch", "triton", "pip", "setuptools", "wheel", "ruff"}
pins = sorted({(d.metadata["Name"], d.version) for d in md.distributions()
               if d.metadata["Name"] and d.metadata["Name"].lower() not in skip
               and not d.metadata["Name"].lower().startswith("nvidia-")}, key=lambda p: p[0].lower())
py = ".".join(platform.python_version_tuple()[:2])
torch = next((d.version for d in md.distributions() if d.metadata["Name"] == "torch"), "none")
print(f"# The releases the test suite last passed with (Python {py}, torch {torch}, {time.strftime('%Y-%m-%d')}).")
print("# Used by tools/setup.sh (pip install -c constraints.txt); written by tools/write-constraints.sh, refreshed")
print("# by tools/upgrade-deps.sh when the suite passes on newer releases. The package's own ranges (pyproject.toml)")
print("# stay open for users. Another Python ignores these pins (markers) and gets the newest releases allowed.")
for name, version in pins:
    print(f'{name}=={version} ; python_version == "{py}"')
PY
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) pins)"
