"""The import contract in pyproject.toml holds, and breaking it fails `make lint`.

Each case copies the package and pyproject.toml to a scratch directory, adds one forbidden
import there and runs lint-imports on the copy: the real tree is never edited.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')"
)

PURE_SYNC = "sync is pure: no I/O library and no aldaemon module but records and errors"
LOWER_LAYERS = (
    "Label Studio calls, the store and the model never import the loop, the shell or the views"
)


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


def copy_with_extra_import(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package and its pyproject.toml with `line` appended to `module`."""
    shutil.copytree(ROOT / "aldaemon", tmp_path / "aldaemon")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return tmp_path


def report(result: subprocess.CompletedProcess[str]) -> str:
    """lint-imports' output on one line (it wraps long contract names)."""
    return " ".join(result.stdout.split())


class TestImportContract:
    def test_the_real_tree_keeps_every_contract(self) -> None:
        result = lint_imports(ROOT)
        assert 0 == result.returncode, result.stdout + result.stderr
        assert "0 broken" in result.stdout

    @pytest.mark.parametrize(
        ("module", "line"),
        [
            ("aldaemon/sync/policy.py", "import aiohttp"),
            ("aldaemon/sync/policy.py", "import sqlite3"),
            ("aldaemon/sync/reconcile.py", "import asyncio"),
            ("aldaemon/sync/scoring.py", "from aldaemon.store import sqlite"),
        ],
    )
    def test_an_io_import_in_sync_fails_the_purity_contract(
        self, tmp_path: Path, module: str, line: str
    ) -> None:
        result = lint_imports(copy_with_extra_import(tmp_path, module, line))
        assert 0 != result.returncode
        assert f"{PURE_SYNC} BROKEN" in report(result)

    def test_the_store_importing_the_service_fails_the_layer_contract(self, tmp_path: Path) -> None:
        root = copy_with_extra_import(
            tmp_path, "aldaemon/store/__init__.py", "from aldaemon.service import runtime"
        )
        result = lint_imports(root)
        assert 0 != result.returncode
        assert f"{LOWER_LAYERS} BROKEN" in report(result)
        assert "aldaemon.store -> aldaemon.service.runtime" in report(result)
