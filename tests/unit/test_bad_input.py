"""Bad input never crashes the daemon: config files, task data and texts to score.

Property tests (hypothesis) feed random and mutated TOML to `aldaemon check-config`, odd
task payloads to the gateway's pure parser, and odd texts to the model worker's scoring
function. The contract checked is the one an operator relies on: a clear answer (exit 0
or 78, every problem with its key path) or a value, never a traceback.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aldaemon import cli
from aldaemon.errors import EX_CONFIG
from aldaemon.labelstudio import parse_labeling_config
from aldaemon.labelstudio.payloads import parse_task
from aldaemon.model.requests import SingleLabelTraining
from aldaemon.model.training import score_pool, train_and_save
from aldaemon.sync.scoring import STRATEGIES
from tests.lsserver import (
    DEFAULT_LABEL_CONFIG,
    REPO_ROOT,
)

EXAMPLE_CONFIG = REPO_ROOT / "config.example.toml"
SCHEMA = parse_labeling_config(DEFAULT_LABEL_CONFIG)
FILE_LEVEL_PROBLEMS = ("not valid TOML", "not UTF-8")
# Keys the config reader knows but config.example.toml leaves commented out.
KEYS_NOT_IN_EXAMPLE = (
    "labelstudio.token",
    "daemon.webhook_secret",
    "projects[i].retrain.max_interval",
    "projects[i].retrain.cron",
)
ENV_READ_BY_CONFIG = (
    "ALDAEMON_LABEL_STUDIO_TOKEN",
    "ALDAEMON_WEBHOOK_SECRET",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
)
CONFIG_EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FAST_EXAMPLES = settings(max_examples=300, deadline=None)


# ---- TOML: writing a document back, and the key paths it holds ------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(text: str) -> str:
    """A TOML basic string; every control character (U+007F included) as an escape."""
    escaped = []
    for char in text:
        if char in ('"', "\\"):
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: object) -> str:
    """One value, inline: tables as `{k = v}`, so the document needs no [headers]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def toml_document(document: Mapping[str, object]) -> str:
    return "".join(f"{toml_key(key)} = {toml_value(value)}\n" for key, value in document.items())


def document_paths(value: object, prefix: str = "") -> Iterator[str]:
    """Every key path in a parsed document, spelled as the config reader spells them."""
    if isinstance(value, dict):
        for key, child in value.items():
            spelled = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
            path = f"{prefix}.{spelled}" if prefix else spelled
            yield path
            yield from document_paths(child, path)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            if isinstance(child, dict):
                yield from document_paths(child, f"{prefix}[{index}]")


def known_paths(document: object) -> set[str]:
    """The paths an error may name: those in `document`, plus every key the reader knows.

    Known keys come from config.example.toml, so a key missing from `document` (and
    reported as required) still counts; `projects[i]` is widened to every index present.
    """
    example = tomllib.loads(EXAMPLE_CONFIG.read_text())
    schema_paths = set(document_paths(example)) | set(KEYS_NOT_IN_EXAMPLE)
    raw_projects = document.get("projects") if isinstance(document, dict) else None
    count = max(1, len(raw_projects) if isinstance(raw_projects, list) else 1)
    widened: set[str] = set()
    for path in schema_paths:
        generic = path.replace("projects[0]", "projects[i]")
        widened.update(generic.replace("[i]", f"[{n}]") for n in range(count))
    return widened | set(document_paths(document))


def names_a_key_path(problem: str, allowed: set[str]) -> bool:
    return any(problem.startswith(f"{path}: ") for path in allowed)


# ---- running check-config in-process ---------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    code: int
    stdout: str
    stderr: str

    @property
    def problems(self) -> list[str]:
        """The indented lines under "invalid configuration in ...": one per problem."""
        return [line[2:] for line in self.stderr.split("\n") if line.startswith("  ")]


def check_config(path: Path) -> CheckResult:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--config", str(path), "--log-format", "json", "check-config"])
    return CheckResult(code=code, stdout=out.getvalue(), stderr=err.getvalue())


@dataclass(frozen=True)
class Workspace:
    """A directory for config files, with the token and secret files the example names."""

    root: Path
    token_file: Path
    secret_file: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    def example_text(self) -> str:
        """config.example.toml pointing at files that exist, so it is valid as it stands."""
        text = EXAMPLE_CONFIG.read_text()
        text = text.replace("/etc/aldaemon/labelstudio-token", str(self.token_file))
        return text.replace("/etc/aldaemon/webhook-secret", str(self.secret_file))

    def write(self, text: str) -> Path:
        self.config_path.write_text(text, encoding="utf-8")
        return self.config_path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("bad-config")
    token_file = root / "token"
    token_file.write_text("0123456789abcdef0123456789abcdef\n")
    secret_file = root / "webhook-secret"
    secret_file.write_text("a-webhook-secret-of-some-length\n")
    with pytest.MonkeyPatch.context() as patch:
        for name in ENV_READ_BY_CONFIG:
            patch.delenv(name, raising=False)
        yield Workspace(root=root, token_file=token_file, secret_file=secret_file)


# ---- strategies --------------------------------------------------------------------------

KNOWN_KEY_NAMES = sorted(
    {path.rsplit(".", 1)[-1].split("[")[0] for path in document_paths(
        tomllib.loads(EXAMPLE_CONFIG.read_text())
    )}
)  # fmt: skip

# Control characters and line breaks in key names are left to their own test below.
printable_characters = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))
toml_keys = st.one_of(
    st.sampled_from(KNOWN_KEY_NAMES),
    st.from_regex(r"[a-z_][a-z0-9_-]{0,10}", fullmatch=True),
    st.text(printable_characters, min_size=1, max_size=8),
)
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(printable_characters, max_size=20),
    st.sampled_from(["", "http://127.0.0.1:8080", "margin", "aldaemon", "0 3 * * *", ":"]),
    st.dates(),
    st.datetimes(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(toml_keys, children, max_size=4),
    ),
    max_leaves=12,
)
random_documents = st.dictionaries(
    st.one_of(st.sampled_from(["labelstudio", "state", "daemon", "projects"]), toml_keys),
    toml_values,
    max_size=5,
)


def _containers(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, table) of every table in the document, the root included."""
    found: list[tuple[str, dict[str, Any]]] = [("", document)]

    def walk(value: object, path: str) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                child_path = f"{path}.{key}" if path else key
                if isinstance(child, dict):
                    found.append((child_path, child))
                walk(child, child_path)
        elif isinstance(value, list):
            for index, child in enumerate(value):
                if isinstance(child, dict):
                    found.append((f"{path}[{index}]", child))
                    walk(child, f"{path}[{index}]")

    walk(document, "")
    return found


@st.composite
def mutated_documents(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """`base` after 1-4 edits: a value replaced (any type), a key removed, renamed or added."""
    document: dict[str, Any] = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        tables = [t for t in _containers(document) if t[1]] or _containers(document)
        _, table = draw(st.sampled_from(tables))
        operation = draw(st.sampled_from(["replace", "remove", "rename", "add"]))
        if operation == "add" or not table:
            table[draw(toml_keys)] = draw(toml_values)
            continue
        key = draw(st.sampled_from(sorted(table)))
        if operation == "replace":
            table[key] = draw(toml_values)
        elif operation == "remove":
            del table[key]
        else:
            table[draw(toml_keys)] = table.pop(key)
    return document


@st.composite
def edited_texts(draw: st.DrawFn, base: str) -> str:
    """`base` with a few characters inserted, deleted or lines duplicated: often broken."""
    text = base
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        position = draw(st.integers(min_value=0, max_value=len(text)))
        operation = draw(st.sampled_from(["insert", "delete", "duplicate_line"]))
        if operation == "insert":
            text = text[:position] + draw(st.text(max_size=5)) + text[position:]
        elif operation == "delete":
            end = position + draw(st.integers(min_value=1, max_value=20))
            text = text[:position] + text[end:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
                lines.insert(index, lines[index])
                text = "".join(lines)
    return text


# ---- check-config --------------------------------------------------------------------------


def assert_clear_answer(result: CheckResult, document: object) -> None:
    """Exit 0, or 78 with every problem naming a key path or saying the file is not TOML."""
    assert result.code in (0, EX_CONFIG), result
    if result.code == 0:
        return
    allowed = known_paths(document)
    unclear = [
        problem
        for problem in result.problems
        if not names_a_key_path(problem, allowed) and not problem.startswith(FILE_LEVEL_PROBLEMS)
    ]
    assert [] == unclear, result.stderr


def parsed_or_none(text: str) -> object:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


class TestCheckConfigOnBadFiles:
    def test_example_config_is_valid(self, workspace: Workspace) -> None:
        """The shipped example, with its token files present, passes check-config."""
        assert 0 == check_config(workspace.write(workspace.example_text())).code

    def test_problem_lines_are_recognised(self, workspace: Workspace) -> None:
        """A known-bad value yields exit 78 and a problem line naming its key path."""
        text = workspace.example_text().replace("keep_versions = 2", 'keep_versions = "two"')
        result = check_config(workspace.write(text))

        assert ["projects[0].predictions.keep_versions: must be an integer, got a string"] == (
            result.problems
        )

    @pytest.mark.parametrize("key", ["bad\nkey", "bad\rkey", "\x1b[2Jkey"])
    def test_key_with_control_characters_stays_on_its_problem_line(
        self, workspace: Workspace, key: str
    ) -> None:
        """An unknown key holding a line break or escape cannot break or forge output lines."""
        text = workspace.example_text() + f"\n[state.{toml_string(key)}]\n"
        lines = check_config(workspace.write(text)).stderr.rstrip("\n").split("\n")

        garbled = [
            line for line in lines[1:] if not (line.startswith("  state.") and line.isprintable())
        ]
        assert [] == garbled

    def test_value_with_a_line_break_stays_on_its_problem_line(self, workspace: Workspace) -> None:
        """A token_file path holding a line break is shown escaped, on one problem line."""
        text = workspace.example_text().replace(
            str(workspace.token_file), "/nonexistent\\nprojects[0].id: forged problem"
        )
        lines = check_config(workspace.write(text)).stderr.rstrip("\n").split("\n")

        assert [] == [line for line in lines[1:] if not line.startswith("  labelstudio.")]

    @CONFIG_EXAMPLES
    @given(data=st.data())
    def test_mutated_example_gets_a_clear_answer(
        self, workspace: Workspace, data: st.DataObject
    ) -> None:
        """The example with values, keys and types mutated is accepted or refused by path."""
        base = tomllib.loads(workspace.example_text())
        document = data.draw(mutated_documents(base))
        result = check_config(workspace.write(toml_document(document)))

        assert_clear_answer(result, document)

    @CONFIG_EXAMPLES
    @given(data=st.data())
    def test_edited_example_text_gets_a_clear_answer(
        self, workspace: Workspace, data: st.DataObject
    ) -> None:
        """The example text with characters inserted or deleted never crashes check-config."""
        text = data.draw(edited_texts(workspace.example_text()))
        result = check_config(workspace.write(text))

        assert_clear_answer(result, parsed_or_none(text))

    @CONFIG_EXAMPLES
    @given(document=random_documents)
    def test_random_document_gets_a_clear_answer(
        self, workspace: Workspace, document: dict[str, Any]
    ) -> None:
        """A random TOML document is refused with key paths, never with a traceback."""
        text = toml_document(document)
        result = check_config(workspace.write(text))

        assert_clear_answer(result, tomllib.loads(text))

    @CONFIG_EXAMPLES
    @given(text=st.text(max_size=200))
    @example(text="")
    @example(text="[[projects]]\n[[projects]]\n")
    @example(text="projects = 1\n[labelstudio\n")
    def test_random_text_gets_a_clear_answer(self, workspace: Workspace, text: str) -> None:
        """Arbitrary text as a config file is refused clearly: not TOML, or by key path."""
        result = check_config(workspace.write(text))

        assert_clear_answer(result, parsed_or_none(text))


SUBPROCESS_CASES = {
    "invalid TOML": b"[labelstudio\nurl = \n",
    "not UTF-8": b"\xff\xfe[labelstudio]\x00\x81",
    "wrong types": b'labelstudio = 3\nstate = "x"\nprojects = [1, 2]\n',
    "empty file": b"",
}


class TestCheckConfigProcess:
    @pytest.mark.parametrize("content", SUBPROCESS_CASES.values(), ids=SUBPROCESS_CASES.keys())
    def test_bad_file_prints_no_traceback(self, tmp_path: Path, content: bytes) -> None:
        """`python -m aldaemon check-config` on a bad file exits 78 without a traceback."""
        config = tmp_path / "config.toml"
        config.write_bytes(content)
        completed = run_check_config(config)

        assert (EX_CONFIG, False) == (completed.returncode, "Traceback" in completed.stderr)

    def test_missing_file_prints_no_traceback(self, tmp_path: Path) -> None:
        """A config path that does not exist exits 78 without a traceback."""
        completed = run_check_config(tmp_path / "absent.toml")

        assert (EX_CONFIG, False) == (completed.returncode, "Traceback" in completed.stderr)

    def test_directory_as_config_prints_no_traceback(self, tmp_path: Path) -> None:
        """A directory given as the config file exits 78 without a traceback."""
        completed = run_check_config(tmp_path)

        assert (EX_CONFIG, False) == (completed.returncode, "Traceback" in completed.stderr)


def run_check_config(config: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "aldaemon", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


# ---- task payloads ---------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
MISSING = object()


@st.composite
def task_data(draw: st.DrawFn) -> object:
    """A task's `data`: usually a dict with or without the text field, sometimes not a dict."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(json_values)
    data: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    text = draw(
        st.one_of(
            st.just(MISSING),
            json_values,
            st.text(),
            st.text(st.characters(codec="utf-8"), min_size=1),
            st.sampled_from(["", " ", "\n\t", "\x00", "ünïcödé", "日本語のテキスト", "😀🎉👍🏽"]),
        )
    )
    if text is not MISSING:
        data["text"] = text
    return data


def raw_task(data: object, annotations: object = None) -> dict[str, Any]:
    return {
        "id": 42,
        "updated_at": "2026-11-27T21:11:36.815556Z",
        "data": data,
        "annotations": annotations,
    }


def expected_text(data: object) -> str | None:
    text = data.get("text") if isinstance(data, dict) else None
    return text if isinstance(text, str) else None


class TestTaskPayloadParsing:
    @FAST_EXAMPLES
    @given(data=task_data())
    @example(data={"text": "x" * 1_000_000})
    @example(data={"text": "Ünïcode, кириллица, العربية, 中文, हिन्दी and emoji 😀👩‍👩‍👧"})
    @example(data={"text": None})
    @example(data={"text": ["a", "list"]})
    @example(data={"text": {"nested": "dict"}})
    @example(data={"text": 3.5})
    @example(data=None)
    @example(data="a bare string")
    def test_text_is_the_string_or_none(self, data: object) -> None:
        """The task's text is its field when that is a string, else None; never an error."""
        record = parse_task(raw_task(data), SCHEMA)

        assert expected_text(data) == record.text

    def test_task_without_data_has_no_text(self) -> None:
        """A task payload lacking `data` altogether parses with text None."""
        raw = raw_task(None)
        del raw["data"]

        assert None is parse_task(raw, SCHEMA).text

    @FAST_EXAMPLES
    @given(result=json_values, was_cancelled=json_values, completed_by=json_values)
    def test_any_annotation_result_gives_a_label_or_none(
        self, result: object, was_cancelled: object, completed_by: object
    ) -> None:
        """An annotation whose result is any JSON yields a string label or None."""
        annotation = {
            "id": 7,
            "result": result,
            "was_cancelled": was_cancelled,
            "completed_by": completed_by,
            "updated_at": "2026-11-27T21:11:36.815556Z",
        }
        label = parse_task(raw_task({"text": "t"}, [annotation]), SCHEMA).annotations[0].label

        assert label is None or isinstance(label, str)

    @FAST_EXAMPLES
    @given(result=json_values)
    def test_skip_never_carries_a_label(self, result: object) -> None:
        """A cancelled annotation has no label whatever its result holds."""
        annotation = {"id": 7, "result": result, "was_cancelled": True}
        label = parse_task(raw_task({"text": "t"}, [annotation]), SCHEMA).annotations[0].label

        assert None is label

    @pytest.mark.parametrize("annotations", [None, []], ids=["null", "empty"])
    def test_null_or_empty_annotations_mean_none(self, annotations: object) -> None:
        """A task whose annotations are null or an empty list has no annotations."""
        raw = raw_task({"text": "t"}, annotations)

        assert () == parse_task(raw, SCHEMA).annotations

    def test_absent_annotations_mean_none(self) -> None:
        """A task payload without an `annotations` key has no annotations."""
        raw = raw_task({"text": "t"})
        del raw["annotations"]

        assert () == parse_task(raw, SCHEMA).annotations


# ---- scoring odd texts ----------------------------------------------------------------------

TRAIN_TEXTS = [f"{word} thing number {n}" for n in range(6) for word in ("great", "awful")]
TRAIN_LABELS = ["pos" if text.startswith("great") else "neg" for text in TRAIN_TEXTS]
odd_texts = st.one_of(
    st.text(),
    st.text(st.characters(codec="utf-8")),
    st.sampled_from(["", " ", "\x00", "great", "awful great", "😀🎉", "кириллица 中文 عربى"]),
)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A default text classifier trained on a dozen tiny texts, saved once for the module."""
    path = tmp_path_factory.mktemp("model") / "model.joblib"
    train_and_save(
        SingleLabelTraining(
            factory_ref="aldaemon.model.default:make_text_classifier",
            texts=TRAIN_TEXTS,
            labels=TRAIN_LABELS,
            artifact_path=str(path),
        )
    )
    return str(path)


class TestScoringOddTexts:
    @settings(max_examples=100, deadline=None)
    @given(
        texts=st.lists(odd_texts, min_size=1, max_size=8),
        strategy=st.sampled_from(STRATEGIES),
        clusters=st.integers(min_value=0, max_value=3),
    )
    def test_every_text_gets_a_label_and_a_score_in_unit_range(
        self, artifact: str, texts: list[str], strategy: str, clusters: int
    ) -> None:
        """Empty, NUL, emoji and any-script texts each get a known label and a score in [0, 1]."""
        scored = score_pool(
            artifact_path=artifact,
            task_ids=list(range(len(texts))),
            texts=texts,
            strategy=strategy,
            clusters=clusters,
        )
        well_formed = [
            label in ("pos", "neg") and 0.0 <= score <= 1.0
            for label, score in zip(scored.labels, scored.scores, strict=True)
        ]

        assert [True] * len(texts) == well_formed

    def test_megabyte_text_is_scored(self, artifact: str) -> None:
        """A 1 MB text is scored like any other."""
        text = ("great awful " * 90_000)[:1_000_000]
        scored = score_pool(artifact_path=artifact, task_ids=[1], texts=[text], strategy="margin")

        assert (1,) == scored.task_ids
