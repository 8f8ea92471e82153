"""The repository stays clean under its linters: ruff for Python, hadolint for the Dockerfile,
import-linter for the layers (docs/architecture.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (it comes with the test extra)")
    return found


def test_ruff():
    targets = [p for p in ("service", "tests", "bench") if (ROOT / p).is_dir()]
    result = subprocess.run([tool("ruff"), "check", *targets], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint():
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # --no-cache: a copy of the tree must be read afresh, not from the cache of the original.
    return subprocess.run([tool("lint-imports"), "--no-cache"], cwd=root, capture_output=True,
                          text=True, timeout=120, check=False)


def test_imports_go_down_the_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("module", "upward"), [
    ("service/storage/db.py", "from service.web import app_keys"),
    ("service/resolution/resolver.py", "from service.enrichment import recommenders"),
    ("service/adapters/pinpoint.py", "from service.catalog import merge_patch"),
    ("service/errors.py", "from service.runtime import settings"),
])
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, upward: str):
    shutil.copytree(ROOT / "service", tmp_path / "service",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint_imports(tmp_path).returncode == 0  # the copy alone keeps the contract
    target = tmp_path / module
    target.write_text(target.read_text() + textwrap.dedent(f"""

        {upward}  # noqa: E402
    """))
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
