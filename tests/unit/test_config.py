"""Configuration: every mistake is reported with its key path, and valid files load."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from aldaemon.cli import main
from aldaemon.config import load_config
from aldaemon.errors import EX_CONFIG, ConfigError
from tests.daskcluster import require_distributed

GOOD = """
[labelstudio]
url = "http://127.0.0.1:8080"
token = "inline-dev-token-123"

[state]
dir = "{state}"

[daemon]
poll_interval = 5
listen = ""

[[projects]]
id = 1
[projects.retrain]
min_new_annotations = 3
[projects.predictions]
strategy = "entropy"
keep_versions = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text.replace("{state}", str(tmp_path / "state")))
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value.problems


class TestValidConfig:
    def test_values_are_read_into_typed_fields(self, tmp_path: Path) -> None:
        """A valid file gives typed values, with defaults for what it leaves out."""
        config = load_config(write(tmp_path, GOOD), env={})
        project = config.projects[0]
        assert (1, 3, "entropy", 3) == (
            project.id,
            project.retrain.min_new_annotations,
            project.predictions.strategy,
            project.predictions.keep_versions,
        )
        assert 60.0 == project.retrain.min_interval
        assert "aldaemon" == project.predictions.version_prefix

    def test_token_is_hidden_in_repr(self, tmp_path: Path) -> None:
        """The token never shows in the config's repr."""
        config = load_config(write(tmp_path, GOOD), env={})
        assert "inline-dev-token-123" not in repr(config)
        assert "inline-dev-token-123" == config.labelstudio.token.reveal()

    def test_systemd_credential_wins_over_every_other_source(self, tmp_path: Path) -> None:
        """$CREDENTIALS_DIRECTORY/labelstudio-token is preferred to file, env and inline."""
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "labelstudio-token").write_text("from-credential\n")
        token_file = tmp_path / "token"
        token_file.write_text("from-file")
        text = GOOD.replace('token = "inline-dev-token-123"', f'token_file = "{token_file}"')
        env = {"CREDENTIALS_DIRECTORY": str(creds), "ALDAEMON_LABEL_STUDIO_TOKEN": "from-env"}
        config = load_config(write(tmp_path, text), env=env)
        assert "from-credential" == config.labelstudio.token.reveal()

    def test_token_file_wins_over_environment(self, tmp_path: Path) -> None:
        """token_file is preferred to ALDAEMON_LABEL_STUDIO_TOKEN."""
        token_file = tmp_path / "token"
        token_file.write_text("from-file\n")
        text = GOOD.replace('token = "inline-dev-token-123"', f'token_file = "{token_file}"')
        config = load_config(write(tmp_path, text), env={"ALDAEMON_LABEL_STUDIO_TOKEN": "env"})
        assert "from-file" == config.labelstudio.token.reveal()

    def test_environment_wins_over_inline(self, tmp_path: Path) -> None:
        """ALDAEMON_LABEL_STUDIO_TOKEN is preferred to an inline token."""
        config = load_config(write(tmp_path, GOOD), env={"ALDAEMON_LABEL_STUDIO_TOKEN": "env"})
        assert "env" == config.labelstudio.token.reveal()

    def test_state_dir_defaults_to_systemd_state_directory(self, tmp_path: Path) -> None:
        """Without [state].dir, $STATE_DIRECTORY is used."""
        text = GOOD.replace('dir = "{state}"', "")
        config = load_config(write(tmp_path, text), env={"STATE_DIRECTORY": "/var/lib/x"})
        assert Path("/var/lib/x") == config.state.dir

    def test_a_relative_state_dir_is_made_absolute_against_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Model jobs open files under it from other processes and machines (Dask)."""
        monkeypatch.chdir(tmp_path)
        path = tmp_path / "config.toml"
        path.write_text(GOOD.replace("{state}", "relative/state"))
        assert tmp_path / "relative" / "state" == load_config(path, env={}).state.dir


class TestInvalidConfig:
    def test_out_of_range_value_names_its_key_path(self, tmp_path: Path) -> None:
        """A zero threshold is reported as projects[0].retrain.min_new_annotations."""
        text = GOOD.replace("min_new_annotations = 3", "min_new_annotations = 0")
        assert ["projects[0].retrain.min_new_annotations: must be > 0, got 0"] == problems_of(
            write(tmp_path, text)
        )

    def test_unknown_key_is_an_error(self, tmp_path: Path) -> None:
        """A misspelt key is reported rather than silently ignored."""
        text = GOOD.replace("min_new_annotations = 3", "min_new_anotations = 3")
        assert ["projects[0].retrain.min_new_anotations: unknown key"] == problems_of(
            write(tmp_path, text)
        )

    def test_wrong_type_names_the_type(self, tmp_path: Path) -> None:
        """A string where a number belongs says what it got."""
        text = GOOD.replace("poll_interval = 5", 'poll_interval = "5"')
        assert ["daemon.poll_interval: must be a number, got a string"] == problems_of(
            write(tmp_path, text)
        )

    def test_missing_token_is_an_error(self, tmp_path: Path) -> None:
        """No token anywhere is an error that lists where a token can come from."""
        text = GOOD.replace('token = "inline-dev-token-123"', "")
        [problem] = problems_of(write(tmp_path, text))
        assert problem.startswith("labelstudio.token: no API token")

    def test_unreadable_token_file_names_the_file(self, tmp_path: Path) -> None:
        """A token_file that does not exist is reported with its path."""
        text = GOOD.replace('token = "inline-dev-token-123"', 'token_file = "/nonexistent/t"')
        problems = problems_of(write(tmp_path, text))
        assert "labelstudio.token_file: cannot read /nonexistent/t" in problems[0]

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        """Several mistakes give several lines, not just the first."""
        text = GOOD.replace('strategy = "entropy"', 'strategy = "best"').replace(
            "keep_versions = 3", "keep_versions = 0"
        )
        assert 2 == len(problems_of(write(tmp_path, text)))

    def test_unknown_strategy_lists_the_choices(self, tmp_path: Path) -> None:
        """An unknown strategy names the valid ones."""
        text = GOOD.replace('strategy = "entropy"', 'strategy = "best"')
        assert [
            "projects[0].predictions.strategy: must be one of margin, least_confidence, "
            "entropy, got 'best'"
        ] == problems_of(write(tmp_path, text))

    def test_cron_the_scheduler_would_refuse_is_an_error(self, tmp_path: Path) -> None:
        """A cron expression with an out-of-range field is caught by check-config, not by run."""
        text = GOOD.replace(
            "min_new_annotations = 3", 'min_new_annotations = 3\ncron = "99 * * * *"'
        )
        assert [
            'projects[0].retrain.cron: must be a 5-field cron expression like "0 3 * * *", '
            "got '99 * * * *'"
        ] == problems_of(write(tmp_path, text))

    def test_duplicate_project_is_an_error(self, tmp_path: Path) -> None:
        """The same project id twice is refused."""
        text = GOOD + "\n[[projects]]\nid = 1\n"
        assert ["projects[1].id: project 1 is configured twice"] == problems_of(
            write(tmp_path, text)
        )

    def test_no_projects_is_an_error(self, tmp_path: Path) -> None:
        """A config without any [[projects]] table is refused."""
        text = GOOD.split("[[projects]]")[0]
        assert ["projects: at least one [[projects]] table is required"] == problems_of(
            write(tmp_path, text)
        )

    def test_broken_toml_is_an_error_with_position(self, tmp_path: Path) -> None:
        """A syntax error says it is not valid TOML, with the line."""
        [problem] = problems_of(write(tmp_path, "[labelstudio\nurl = 1"))
        assert problem.startswith("not valid TOML") and "line 1" in problem

    def test_missing_file_is_an_error(self, tmp_path: Path) -> None:
        """A missing file is reported as such."""
        assert ["file not found"] == problems_of(tmp_path / "nope.toml")


class TestCheckConfigCommand:
    def test_valid_config_exits_zero(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """check-config prints a one-line summary and exits 0 for a valid file."""
        assert 0 == main(["--config", str(write(tmp_path, GOOD)), "check-config"])
        assert "valid (1 project(s): 1)" in capsys.readouterr().out

    def test_invalid_config_exits_78_listing_every_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """check-config prints each problem with its key path and exits 78."""
        text = GOOD.replace("min_new_annotations = 3", "min_new_annotations = -1").replace(
            'url = "http://127.0.0.1:8080"', 'url = "127.0.0.1:8080"'
        )
        assert EX_CONFIG == main(["--config", str(write(tmp_path, text)), "check-config"])
        err = capsys.readouterr().err
        assert "projects[0].retrain.min_new_annotations: must be > 0, got -1" in err
        assert "labelstudio.url: must start with http:// or https://" in err

    def test_no_traceback_reaches_the_user(self, tmp_path: Path) -> None:
        """A broken file run through the real entry point prints no traceback."""
        path = write(tmp_path, "this is = = not toml")
        proc = subprocess.run(
            [sys.executable, "-m", "aldaemon", "--config", str(path), "check-config"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (EX_CONFIG, False) == (proc.returncode, "Traceback" in proc.stderr)


ML_BACKEND_PROJECT = """
[[projects]]
id = 2
model = "ml-backend"
{extra}
"""


class TestMLBackendConfig:
    def test_a_project_names_its_ml_backend_with_defaults(self, tmp_path: Path) -> None:
        """model = "ml-backend": the one connected, 100 tasks per call, 50 s per call."""
        text = GOOD + ML_BACKEND_PROJECT.replace("{extra}", "")
        project = load_config(write(tmp_path, text), env={}).projects[1]
        assert (True, None, 100, 50.0) == (
            project.uses_ml_backend,
            project.ml_backend_id,
            project.ml_backend.batch_size,
            project.ml_backend.timeout,
        )

    def test_an_id_and_the_call_sizes_are_read(self, tmp_path: Path) -> None:
        """ml_backend_id and [projects.ml_backend] batch_size / timeout."""
        extra = "ml_backend_id = 7\n[projects.ml_backend]\nbatch_size = 25\ntimeout = 12.5"
        text = GOOD + ML_BACKEND_PROJECT.replace("{extra}", extra)
        project = load_config(write(tmp_path, text), env={}).projects[1]
        assert (7, 25, 12.5) == (
            project.ml_backend_id,
            project.ml_backend.batch_size,
            project.ml_backend.timeout,
        )

    def test_bad_values_are_reported_with_their_key_paths(self, tmp_path: Path) -> None:
        """A zero batch, a string timeout, an unknown key, an id of 0: each named."""
        extra = (
            'ml_backend_id = 0\n[projects.ml_backend]\nbatch_size = 0\ntimeout = "fast"\n'
            "retries = 3"
        )
        problems = problems_of(write(tmp_path, GOOD + ML_BACKEND_PROJECT.replace("{extra}", extra)))
        for key in ("ml_backend_id", "ml_backend.batch_size", "ml_backend.timeout",
                    "ml_backend.retries"):  # fmt: skip
            assert any(p.startswith(f"projects[1].{key}:") for p in problems), (key, problems)

    def test_backend_keys_on_a_built_in_model_are_refused(self, tmp_path: Path) -> None:
        """ml_backend_id without model = "ml-backend" is a mistake, said so."""
        problems = problems_of(
            write(tmp_path, GOOD.replace("id = 1\n", "id = 1\nml_backend_id = 2\n"))
        )
        assert ['projects[0].ml_backend_id: applies only with model = "ml-backend"'] == problems


class TestQueueDepth:
    def test_the_default_publishes_the_thousand_most_informative(self, tmp_path: Path) -> None:
        """Without the key, a version holds the 1,000 most informative tasks (README)."""
        config = load_config(write(tmp_path, GOOD), env={})
        assert 1000 == config.projects[0].predictions.queue_depth

    def test_zero_publishes_every_task(self, tmp_path: Path) -> None:
        """`queue_depth = 0` means no limit: every unlabeled task is published."""
        config = load_config(write(tmp_path, GOOD + "queue_depth = 0\n"), env={})
        assert config.projects[0].predictions.queue_depth is None


class TestDaskScheduler:
    def test_without_the_key_model_jobs_run_locally(self, tmp_path: Path) -> None:
        """No `dask_scheduler`: the local worker process, named "local" by status."""
        config = load_config(write(tmp_path, GOOD), env={})
        assert (None, "local") == (config.daemon.dask_scheduler, config.daemon.model_runner)

    @pytest.mark.parametrize(
        "address", ["tcp://10.0.0.5:8786", "tls://scheduler.internal:8786", "tcp://[::1]:8786"]
    )
    def test_a_tcp_or_tls_address_is_read(self, tmp_path: Path, address: str) -> None:
        """A tcp:// or tls:// HOST:PORT selects the Dask runner, named with its address."""
        require_distributed()
        text = GOOD.replace('listen = ""', f'listen = ""\ndask_scheduler = "{address}"')
        config = load_config(write(tmp_path, text), env={})
        assert (address, f"dask {address}") == (
            config.daemon.dask_scheduler,
            config.daemon.model_runner,
        )

    @pytest.mark.parametrize(
        "address", ["10.0.0.5:8786", "tcp://10.0.0.5", "http://10.0.0.5:8786", "tcp://:8786"]
    )
    def test_a_bad_address_names_the_key_and_the_shape(self, tmp_path: Path, address: str) -> None:
        """No scheme, no port, a foreign scheme or no host: one problem naming the key."""
        text = GOOD.replace('listen = ""', f'listen = ""\ndask_scheduler = "{address}"')
        expected = (
            f'daemon.dask_scheduler: must look like "tcp://HOST:PORT" or "tls://HOST:PORT", '
            f"got {address!r}"
        )
        assert [expected] == problems_of(write(tmp_path, text))

    def test_check_config_names_the_file_and_the_key_without_a_traceback(
        self, tmp_path: Path
    ) -> None:
        """Through the real entry point: exit 78, the file and the key named, no traceback."""
        text = GOOD.replace('listen = ""', 'listen = ""\ndask_scheduler = "tcp://scheduler"')
        path = write(tmp_path, text)
        proc = subprocess.run(
            [sys.executable, "-m", "aldaemon", "--config", str(path), "check-config"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (EX_CONFIG, False) == (proc.returncode, "Traceback" in proc.stderr)
        assert str(path) in proc.stderr
        assert "daemon.dask_scheduler: must look like" in proc.stderr

    def test_without_the_distributed_package_the_key_says_what_to_install(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A valid address but no distributed installed: a config error naming the extra."""
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *args: None if name == "distributed" else real_find_spec(name, *args),
        )
        text = GOOD.replace('listen = ""', 'listen = ""\ndask_scheduler = "tcp://10.0.0.5:8786"')
        assert [
            "daemon.dask_scheduler: needs the Dask distributed package, which is not installed: "
            "pip install 'aldaemon[scale]'"
        ] == problems_of(write(tmp_path, text))
