"""The command line: global flags in either place, exit codes, a start without a home directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from aldaemon import errors
from aldaemon.cli import build_parser
from tests.lsserver import REPO_ROOT


class TestGlobalFlags:
    @pytest.mark.parametrize(
        "argv",
        [
            ["--config", "X.toml", "--log-format", "json", "--log-level", "debug", "run"],
            ["run", "--config", "X.toml", "--log-format", "json", "--log-level", "debug"],
            ["--config", "X.toml", "run", "--log-format", "json", "--log-level", "debug"],
        ],
    )
    def test_flags_mean_the_same_before_and_after_the_command(self, argv: list[str]) -> None:
        """`aldaemon run --config X` and `aldaemon --config X run` parse alike."""
        args = build_parser().parse_args(argv)
        assert ("run", "X.toml", "json", "debug") == (
            args.command,
            args.config,
            args.log_format,
            args.log_level,
        )

    def test_a_flag_before_the_command_survives_the_commands_defaults(self) -> None:
        """A flag given only before the command is not reset by the command's parser."""
        args = build_parser().parse_args(["--log-level", "error", "status", "--json"])
        assert ("error", True) == (args.log_level, args.json)

    def test_nested_commands_take_the_flags_after_their_last_word(self) -> None:
        """`aldaemon state rebuild --project 2 --config Z` reads the config path."""
        args = build_parser().parse_args(["state", "rebuild", "--project", "2", "--config", "Z"])
        assert ("Z", 2) == (args.config, args.project)

    def test_the_later_flag_wins(self) -> None:
        """Given in both places, the one after the command counts, as the user typed last."""
        args = build_parser().parse_args(["--config", "A", "once", "--config", "B"])
        assert "B" == args.config

    def test_without_a_flag_the_defaults_apply(self) -> None:
        """No --config means the default path is resolved later; log level defaults to info."""
        args = build_parser().parse_args(["once"])
        assert (None, "info") == (args.config, args.log_level)


def _no_passwd_uid() -> int:
    """A uid with no passwd entry, as a DynamicUser service has without libnss-systemd."""
    import pwd

    for uid in range(61_184, 65_519):  # systemd's dynamic user range
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("every dynamic uid has a passwd entry")


class TestStartWithoutAHomeDirectory:
    @pytest.mark.skipif(os.geteuid() != 0, reason="switching to a uid without passwd needs root")
    def test_check_config_runs_as_a_user_without_home_or_passwd_entry(self) -> None:
        """A uid with no passwd entry and no $HOME imports every dependency and runs."""
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is not installed")
        uid = _no_passwd_uid()
        # pytest's tmp_path sits under a 0700 directory the other uid cannot enter.
        readable = tempfile.TemporaryDirectory(prefix="aldaemon-nohome-")
        state_dir = Path(readable.name)
        state_dir.chmod(0o755)
        config = state_dir / "config.toml"
        config.write_text(
            '[labelstudio]\nurl = "http://127.0.0.1:1"\ntoken = "t"\n'
            f'[state]\ndir = "{state_dir}"\n[[projects]]\nid = 1\n'
        )
        env = {key: value for key, value in os.environ.items() if key != "HOME"}
        env["PYTHONPATH"] = str(REPO_ROOT)
        # Import the Label Studio client too: that is where the home directory was needed.
        script = (
            "import sys; from aldaemon.labelstudio import gateway; from aldaemon.cli import main;"
            f" sys.exit(main(['check-config', '--config', {str(config)!r}]))"
        )
        python = [sys.executable, "-c", script]
        done = subprocess.run(
            [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *python],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        readable.cleanup()
        assert (0, "") == (done.returncode, done.stderr)


class TestExitCodes:
    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (errors.ConfigError("c.toml", ["x: bad"]), errors.EX_CONFIG),
            (errors.StateError("state dir not writable"), errors.EX_CANTCREAT),
            (errors.StateLockedError("held by pid 7"), errors.EX_CANTCREAT),
            (errors.LabelStudioAuthError("401", status_code=401), 1),
            (errors.LabelStudioUnreachable("down"), 1),
            (errors.ModelWorkerLost("worker died"), 1),
            (errors.AldaemonError("anything else"), 1),
        ],
    )
    def test_each_error_class_has_its_exit_code(
        self, error: errors.AldaemonError, expected: int
    ) -> None:
        """A bad config exits 78, unusable state 73, every other failure 1."""
        assert expected == errors.exit_code(error)


class TestErrorTree:
    def test_a_dead_worker_is_temporary_unlike_a_bad_config(self) -> None:
        """A worker killed for memory is retried; a bad config needs a person."""
        lost = errors.ModelWorkerLost("worker died")
        bad = errors.ConfigError("c.toml", ["x: bad"])
        assert (True, False, True) == (
            isinstance(lost, errors.TemporaryError),
            isinstance(lost, errors.PermanentError),
            isinstance(bad, errors.PermanentError),
        )

    def test_every_label_studio_leaf_is_on_one_side(self) -> None:
        """Unreachable is temporary; refused, auth and not-found are permanent."""
        sides = [
            isinstance(cls("x"), errors.TemporaryError)
            for cls in (
                errors.LabelStudioUnreachable,
                errors.LabelStudioRefused,
                errors.LabelStudioAuthError,
                errors.ProjectNotFound,
            )
        ]
        assert [True, False, False, False] == sides
