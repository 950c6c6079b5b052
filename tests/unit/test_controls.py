"""Several <Choices> on one task: the `controls` key, the served schema, codes, scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aldaemon.config import load_config
from aldaemon.errors import ConfigError, UnsupportedLabelingConfig
from aldaemon.labelstudio.payloads import parse_annotation, prediction_payloads
from aldaemon.labelstudio.served_config import read_served_schema
from aldaemon.model.artifacts import load_artifact
from aldaemon.model.control_jobs import score_controls, train_controls_and_save
from aldaemon.model.requests import ControlsTraining, ScoringRequest
from aldaemon.records import PredictionRecord
from aldaemon.sync.control_answers import decode_choice, encode_choice
from aldaemon.sync.shape_scoring import multilabel_scores, single_choice_scores

CONFIG = """
[labelstudio]
url = "http://127.0.0.1:8080"
token = "inline-dev-token-123"
[state]
dir = "{state}"
[[projects]]
id = 1
{controls}
"""
XML = """<View><Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="pos"/><Choice value="neg"/></Choices>
  <Choices name="topic" toName="text" choice="multiple">
    <Choice value="food"/><Choice value="travel"/>
  </Choices>
  <Rating name="stars" toName="text"/>
</View>"""


def config_with(tmp_path: Path, controls: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state", controls=controls))
    return path


def test_controls_are_read_in_order(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, 'controls = ["topic", "sentiment"]'), env={})
    assert ("topic", "sentiment") == config.projects[0].controls
    assert load_config(config_with(tmp_path, ""), env={}).projects[0].controls is None


@pytest.mark.parametrize("value", ["[]", '"topic"', "[1]", '["a", "a"]'])
def test_a_bad_controls_value_is_a_config_error_with_its_key_path(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_with(tmp_path, f"controls = {value}"), env={})
    assert any(problem.startswith("projects[0].controls: ") for problem in info.value.problems)


def test_every_choices_is_learned_by_default_and_codes_are_its_labels() -> None:
    schema = read_served_schema(XML)
    assert ["sentiment", "topic"] == [c.name for c in schema.controls]
    assert ("sentiment:pos", "sentiment:neg", "topic:food", "topic:travel") == schema.labels
    single = read_served_schema(XML, controls=["topic"])
    assert (single.controls, single.multiple, single.labels) == ((), True, ("food", "travel"))


def test_a_refused_or_unknown_control_name_says_why() -> None:
    with pytest.raises(UnsupportedLabelingConfig, match=r"\[\[projects\]\] controls: .*'stars'"):
        read_served_schema(XML, controls=["sentiment", "stars"])
    with pytest.raises(UnsupportedLabelingConfig, match="'mood' is not in the labeling config"):
        read_served_schema(XML, controls=["mood"])


def test_an_annotation_answers_per_control_and_a_prediction_has_one_result_per_control() -> None:
    schema = read_served_schema(XML)
    result = [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["neg"]},
        },
        {
            "from_name": "topic",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["food", "travel"]},
        },
    ]
    raw = {"id": 1, "updated_at": "2026-01-01T00:00:00Z", "result": result}
    record = parse_annotation(raw, task_id=3, schema=schema)
    assert ("sentiment:neg", "topic:food", "topic:travel") == record.labels
    assert "neg" == record.label
    prediction = PredictionRecord(task_id=3, label="neg", score=0.5, labels=record.labels)
    [payload] = prediction_payloads([prediction], model_version="v1", schema=schema)
    assert result == payload["result"]


def test_a_label_with_a_colon_keeps_it() -> None:
    assert ("topic", "a:b") == decode_choice(encode_choice("topic", "a:b"))


def test_the_task_scores_the_minimum_of_its_controls(tmp_path: Path) -> None:
    schema = read_served_schema(XML)
    texts = ["great pizza", "awful pizza", "great train", "awful train"] * 3
    answers = [
        ("sentiment:pos", "topic:food"),
        ("sentiment:neg", "topic:food"),
        ("sentiment:pos", "topic:travel"),
        ("sentiment:neg", "topic:travel"),
    ] * 3
    path = str(tmp_path / "m.joblib")
    trained = train_controls_and_save(
        ControlsTraining(
            factory_ref="aldaemon.model.default:make_text_classifier",
            texts=texts,
            answers=answers,
            controls=schema.controls,
            artifact_path=path,
        )
    )
    assert 6 == trained.class_counts["topic:food"]
    bundle = load_artifact(path).model
    pool = ["great pizza", "something else entirely"]
    scored = score_controls(
        bundle, ScoringRequest(artifact_path=path, task_ids=[1, 2], texts=pool, strategy="margin")
    )
    assert scored.label_sets is not None
    assert {"sentiment:pos", "topic:food"} <= set(scored.label_sets[0])
    expected = np.minimum(
        single_choice_scores(bundle.models["sentiment"].predict_proba(pool), strategy="margin"),
        multilabel_scores(bundle.models["topic"].predict_proba(pool), strategy="margin"),
    )
    assert pytest.approx(list(expected)) == list(scored.scores)
