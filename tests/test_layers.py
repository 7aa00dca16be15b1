"""The layout rules import-linter cannot express (it sees modules, not names): no package reaches into another
package's private names, and no module grows past 500 lines. The layering itself is `make lint`
(pyproject.toml [tool.importlinter]), run before the tests; `test_import_contracts_hold` runs it here too, so a
plain `pytest` catches a violation as well."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainyard", "cluster", "jobs", "tuning", "serving")
MAX_LINES = 500


def _modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _private_imports(path: Path, own: str = "") -> list[str]:
    """`from other_package... import _name` and `import other_package._module` (dunders such as __version__ are
    public). `own`: the package the module belongs to (default: from its path)."""
    own = own or path.relative_to(ROOT).parts[0]
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in PACKAGES and top != own:
                private_module = [p for p in node.module.split(".") if p.startswith("_") and not p.startswith("__")]
                names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private_module or names:
                    found.append(f"{where}:{node.lineno}: from {node.module} import "
                                 f"{', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in PACKAGES and parts[0] != own and any(
                        p.startswith("_") and not p.startswith("__") for p in parts[1:]):
                    found.append(f"{where}:{node.lineno}: import {alias.name}")
    return found


def test_no_package_imports_another_packages_private_names():
    found = [line for path in _modules() for line in _private_imports(path)]
    assert not found, "private names imported across packages (export a public name instead):\n" + "\n".join(found)


def test_the_private_name_check_catches_one(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("from jobs.train import _pull\nimport cluster._raystart\nfrom jobs.spec import load_spec\n"
                   "from serving._x import y\n")
    found = _private_imports(bad, own="serving")
    assert [f.split(": ", 1)[1] for f in found] == ["from jobs.train import _pull", "import cluster._raystart"]


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    run = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
