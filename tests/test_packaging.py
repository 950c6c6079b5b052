"""What `pip install aldaemon` gets: the daemon's package and nothing else, and its commands.

Why build a real wheel: which files ship is decided by setuptools' find rules in
pyproject.toml, and only the built file shows what they select. The demo, the test suite's
Label Studio launcher, the benchmarks and scripts/ need a clone of the repository, so a
wheel carrying them would carry code that cannot run from it.

The build runs on a copy of the source tree (setuptools writes build/ and *.egg-info beside
pyproject.toml) with the venv's own setuptools when it is recent enough, which needs no
network; an older one cannot read this pyproject.toml, and pip then fetches the backend
pyproject.toml asks for (build isolation).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMMANDS = ("run", "once", "check-config", "status", "pin", "unpin", "report", "webhook", "state")
SUBCOMMANDS = {"webhook": "install", "state": "rebuild"}
# a path part naming what stays in the repository: demo/, demo_data.py, tests/, lsserver.py...
REPOSITORY_ONLY = re.compile(
    r"(^|/)(demo|tests?|bench|scripts)([/_.]|$)|lsserver|install-label-studio"
)


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file names inside a wheel freshly built from this checkout."""
    source = tmp_path_factory.mktemp("source")
    out = tmp_path_factory.mktemp("wheel")
    shutil.copytree(
        ROOT,
        source,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__"),
    )
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out)]
    if _venv_can_build():
        command += ["--no-build-isolation", "--no-index"]
    completed = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=300)
    assert 0 == completed.returncode, completed.stdout + completed.stderr
    (wheel,) = out.glob("aldaemon-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _venv_can_build() -> bool:
    """True when every build requirement of pyproject.toml is installed here."""
    for line in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(line)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


def _help(*args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "aldaemon", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert 0 == completed.returncode, completed.stderr
    return completed.stdout


class TestWheel:
    def test_holds_only_the_package_and_its_metadata(self, wheel_names: list[str]) -> None:
        """Every file is under aldaemon/ or the wheel's .dist-info/, nothing else."""
        dist_info = f"aldaemon-{PYPROJECT['project']['version']}.dist-info"
        outside = sorted(n for n in wheel_names if n.split("/")[0] not in {"aldaemon", dist_info})
        assert [] == outside

    def test_holds_no_demo_launcher_tests_or_scripts(self, wheel_names: list[str]) -> None:
        """Nothing that needs a clone of the repository ships, under any directory."""
        assert [] == sorted(n for n in wheel_names if REPOSITORY_ONLY.search(n))

    def test_holds_the_command_line_entry_point(self, wheel_names: list[str]) -> None:
        """The package really is in it, with what `aldaemon` and `python -m aldaemon` run."""
        assert {"aldaemon/cli.py", "aldaemon/__main__.py"} <= set(wheel_names)


class TestCommandLine:
    def test_help_lists_every_command(self) -> None:
        """`aldaemon --help` names each command of the documented interface."""
        listed = set(re.findall(r"^ {4}([a-z][a-z-]*) ", _help(), flags=re.MULTILINE))
        assert set() == set(COMMANDS) - listed

    @pytest.mark.parametrize(("command", "subcommand"), sorted(SUBCOMMANDS.items()))
    def test_help_of_a_command_group_lists_its_subcommand(
        self, command: str, subcommand: str
    ) -> None:
        """`webhook install` and `state rebuild` are reachable from their group's help."""
        assert re.search(rf"^ {{4}}{subcommand}\b", _help(command), flags=re.MULTILINE)
