"""Configs aldaemon cannot serve are refused clearly, against a real Label Studio.

`once` exits non-zero and prints the refusal, `status` shows it, and a running daemon
logs `project.failed` once for that project and goes on with the others. The refusal
names the control, its tag, the object it points at and what is served instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from aldaemon import cli
from aldaemon.config import load_config
from aldaemon.service.runtime import Runtime
from tests.conftest import MakeProject
from tests.lsserver import DEFAULT_LABEL_CONFIG, LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio

IMAGE = """<View><Image name="photo" value="$image"/>
  <Choices name="animal" toName="photo"><Choice value="cat"/><Choice value="dog"/></Choices>
  <RectangleLabels name="box" toName="photo"><Label value="cat"/></RectangleLabels>
</View>"""
TAXONOMY = """<View><Text name="text" value="$text"/>
  <Taxonomy name="topics" toName="text"><Choice value="science"/></Taxonomy>
</View>"""
PER_REGION = """<View><HyperText name="page" value="$html"/>
  <Labels name="ner" toName="page"><Label value="PER"/></Labels>
  <Choices name="mood" toName="page" perRegion="true">
    <Choice value="happy"/><Choice value="sad"/>
  </Choices>
</View>"""
URL_TEXT = """<View><Text name="text" value="$link" valueType="url"/>
  <Choices name="mood" toName="text"><Choice value="happy"/><Choice value="sad"/></Choices>
</View>"""

CASES = {
    "image": (
        IMAGE,
        {"image": "https://example.org/cat.jpg"},
        [
            "<Choices name='animal'> pointing at <Image name='photo'>",
            "<RectangleLabels name='box'> pointing at <Image name='photo'>",
            "ML backend route",
        ],
    ),
    "taxonomy": (
        TAXONOMY,
        {"text": "a text"},
        ["<Taxonomy name='topics'> pointing at <Text name='text'>", 'choice="multiple"'],
    ),
    "per_region": (
        PER_REGION,
        {"html": "<p>a text</p>"},
        [
            "<Choices name='mood'> pointing at <HyperText name='page'>",
            "perRegion",
            "<Labels name='ner'> pointing at <HyperText name='page'>: spans are learned "
            "over a <Text> only",
        ],
    ),
    "url": (
        URL_TEXT,
        {"link": "https://example.org/review.txt"},
        ["<Text name='text'> has valueType=\"url\"", "'link'", "does not fetch it"],
    ),
}


def write_config(tmp_path: Path, server: LabelStudioServer, project_ids: list[int]) -> Path:
    path = tmp_path / "config.toml"
    projects = "".join(
        f"\n[[projects]]\nid = {pid}\n[projects.retrain]\nmin_new_annotations = 4\n"
        "min_interval = 0\nmin_per_class = 2\n"
        for pid in project_ids
    )
    path.write_text(
        f'[labelstudio]\nurl = "{server.url}"\ntoken = "{server.legacy_token}"\n'
        f'max_attempts = 2\n[state]\ndir = "{tmp_path / "state"}"\n[daemon]\nlisten = ""\n'
        + projects
    )
    return path


@contextmanager
def captured_events() -> Iterator[list[MutableMapping[str, Any]]]:
    capture = LogCapture()
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(processors=previous)


@pytest.mark.parametrize("case", sorted(CASES))
def test_once_exits_non_zero_and_status_shows_the_refusal(
    case: str,
    tmp_path: Path,
    label_studio: LabelStudioServer,
    make_project: MakeProject,
    capsys: pytest.CaptureFixture[str],
) -> None:
    label_config, task, expected = CASES[case]
    project_id = make_project([task], label_config=label_config)
    config = write_config(tmp_path, label_studio, [project_id])

    assert 0 != cli.main(["--config", str(config), "once"])
    printed = capsys.readouterr().out
    for words in expected:
        assert words in printed, printed

    assert 0 == cli.main(["--config", str(config), "status", "--json"])
    [project] = json.loads(capsys.readouterr().out)["projects"]
    for words in expected:
        assert words in (project["failure"] or ""), project


def test_run_logs_the_refusal_once_and_serves_the_other_project(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    refused = make_project([{"text": "a text"}], label_config=TAXONOMY)
    texts = [f"{w} food box" for w in ["great", "awful"] * 6]
    served = make_project([{"text": t} for t in texts], label_config=DEFAULT_LABEL_CONFIG)
    task_ids = ls_client.task_ids(served)
    for task_id, text in list(zip(task_ids, texts, strict=True))[:8]:
        ls_client.annotate(task_id, "pos" if text.startswith("great") else "neg")
    config = load_config(write_config(tmp_path, label_studio, [refused, served]), env={})

    async def cycles() -> list[str]:
        outcomes = []
        async with Runtime(config) as runtime:
            for _ in range(2):
                for project in config.projects:
                    report = await runtime.run_cycle(project)
                    outcomes.append(f"{project.id}:{report.outcome}")
            await runtime.wait_for_prunes()
        return outcomes

    with captured_events() as logs:
        outcomes = asyncio.run(cycles())
    failed = [e for e in logs if e["event"] == "project.failed"]
    assert [refused] == [e["project_id"] for e in failed]
    assert "<Taxonomy name='topics'>" in failed[0]["error"]
    assert f"{served}:ok" in outcomes
    assert ls_client.get_project(served)["model_version"]
