"""The app graph (DESIGN.md section 3): imports run one way, budgets -> finops -> tenants.

tenants is the bottom layer and imports nothing from finops or budgets; finops reaches budgets only
through hooks budgets registers when it is ready; the client helper imports nothing but the standard
library. Checked on the source, so an import inside a function counts too.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "tenants": {"finops", "budgets", "tokenspend_client"},
    "finops": {"budgets", "tokenspend_client"},
    "tokenspend_client": {"finops", "budgets", "tenants", "django", "rest_framework"},
}


def imported_roots(package: str) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            found += [(str(path.relative_to(ROOT)), node.lineno, name) for name in names]
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    offenders = [
        f"{path}:{line} imports {name}"
        for path, line, name in imported_roots(package)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert offenders == []


def test_the_client_imports_only_the_standard_library():
    third_party = [
        f"{path}:{line} imports {name}"
        for path, line, name in imported_roots("tokenspend_client")
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "tokenspend_client"
    ]
    assert third_party == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    """A test of the test: a module of tenants that imports finops is reported."""
    package = tmp_path / "tenants"
    package.mkdir()
    (package / "leak.py").write_text("def f():\n    from finops.models import UsageRecord\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [name for _, _, name in imported_roots("tenants")] == ["finops.models"]
