"""`aldaemon report`: plain data from local state, the HTML page and its plots."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aldaemon import cli
from aldaemon.config import Config, DaemonConfig, LabelStudioConfig, ProjectConfig, StateConfig
from aldaemon.errors import AldaemonError
from aldaemon.loop.poll import record_poll
from aldaemon.model.requests import SingleLabelTraining
from aldaemon.model.training import train_and_save
from aldaemon.records import AnnotationRecord, PredictionRecord, TaskRecord
from aldaemon.secret import Secret
from aldaemon.store import Store
from aldaemon.sync.reconcile import ReconcileOutcome
from aldaemon.views.report import (
    ReportData,
    collect_report_data,
    consecutive_agreements,
    cumulative_by_class,
    kappa_of_predictions,
    render_html,
    version_points,
    write_report,
)

P = 5
MODEL = "aldaemon.model.default:make_text_classifier"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
POSITIVE = ["great taste", "love it", "wonderful snack", "great value", "so good", "love these"]
NEGATIVE = ["stale and bad", "awful taste", "never again", "bad value", "broken bag", "awful"]


def stamp(second: int) -> str:
    return f"2026-11-27T21:00:{second:02d}.000000Z"


def annotation(
    annotation_id: int, task_id: int, label: str | None, *, second: int, skip: bool = False
) -> AnnotationRecord:
    return AnnotationRecord(
        id=annotation_id,
        task_id=task_id,
        label=None if skip else label,
        was_cancelled=skip,
        updated_at=stamp(second),
    )


def fill_tasks(store: Store, texts: list[str], annotations: list[AnnotationRecord]) -> None:
    tasks = tuple(
        TaskRecord(id=index + 1, updated_at=stamp(0), text=text) for index, text in enumerate(texts)
    )
    record_poll(
        store,
        P,
        ReconcileOutcome(tasks=tasks, created=tuple(annotations), label_changes=len(annotations)),
        now=1.0,
    )


def add_version(
    store: Store,
    number: int,
    *,
    state: str = "superseded",
    n_labels: int = 10,
    cv_accuracy: float = 0.7,
    artifact_path: str | None = None,
    predictions: list[PredictionRecord] | None = None,
) -> str:
    name = f"aldaemon-v{number}"
    store.create_version(P, name=name, number=number, now=float(number))
    store.mark_trained(
        P,
        name,
        trained_at=1000.0 + number,
        n_labels=n_labels,
        class_counts={},
        metrics={"cv_accuracy": cv_accuracy, "cv_macro_f1": cv_accuracy - 0.05},
        train_seconds=0.0,
        artifact_path=artifact_path or "",
    )
    set_state(store, name, state)
    if predictions is not None:
        store.save_predictions(P, name, predictions)
    return name


def set_state(store: Store, name: str, state: str) -> None:
    """Put a version in `state` through the store's transition into it."""
    if state == "active":
        store.mark_active(P, name, activated_at=1.0)
    elif state == "superseded":
        store.mark_superseded(P, name)
    elif state == "failed":
        store.mark_failed(P, name, error="test")
    else:
        raise ValueError(f"no test transition into {state!r}")


def predictions(labels: list[str], *, first_task: int = 1) -> list[PredictionRecord]:
    return [
        PredictionRecord(task_id=first_task + i, label=label, score=0.1 * (i % 10))
        for i, label in enumerate(labels)
    ]


def config_for(state_dir: Path) -> Config:
    return Config(
        path="test.toml",
        labelstudio=LabelStudioConfig(url="http://127.0.0.1:8080", token=Secret("t0ken-t0ken")),
        state=StateConfig(dir=state_dir),
        daemon=DaemonConfig(),
        projects=(ProjectConfig(id=P),),
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> Iterator[Store]:
    with Store.open(state_dir) as opened:
        yield opened


@pytest.fixture
def filled(store: Store, tmp_path: Path) -> Store:
    """Twelve labeled tasks, four unlabeled ones, and three versions with artifacts."""
    texts = [*POSITIVE, *NEGATIVE, "great", "bad", "love", "awful bag"]
    labels = ["pos"] * 6 + ["neg"] * 6
    fill_tasks(
        store,
        texts,
        [annotation(100 + i, i + 1, label, second=i) for i, label in enumerate(labels)],
    )
    for number, size in ((1, 4), (2, 5), (3, 6)):
        subset = POSITIVE[:size] + NEGATIVE[:size]
        artifact = str(tmp_path / "models" / f"v{number}.joblib")
        train_and_save(
            SingleLabelTraining(
                factory_ref=MODEL,
                texts=subset,
                labels=["pos"] * size + ["neg"] * size,
                artifact_path=artifact,
            )
        )
        add_version(
            store,
            number,
            state="active" if number == 3 else "superseded",
            n_labels=2 * size,
            cv_accuracy=0.6 + 0.1 * number,
            artifact_path=artifact,
            predictions=predictions(["pos", "neg", "pos", "neg"], first_task=13),
        )
    return store


class TestLabelTimeline:
    def test_labels_come_oldest_first(self, store: Store) -> None:
        """The timeline is ordered by Label Studio's timestamps, not by annotation id."""
        fill_tasks(
            store,
            ["a", "b"],
            [annotation(11, 1, "pos", second=9), annotation(12, 2, "neg", second=3)],
        )
        assert [(stamp(3), "neg"), (stamp(9), "pos")] == store.label_timeline(P)

    def test_skips_are_not_labels(self, store: Store) -> None:
        """A skipped task adds nothing to the timeline."""
        fill_tasks(store, ["a"], [annotation(11, 1, None, second=1, skip=True)])
        assert [] == store.label_timeline(P)

    def test_deleted_annotations_are_left_out(self, store: Store) -> None:
        """An annotation deleted in Label Studio no longer counts."""
        fill_tasks(
            store,
            ["a", "b"],
            [annotation(11, 1, "pos", second=1), annotation(12, 2, "neg", second=2)],
        )
        record_poll(store, P, ReconcileOutcome(deleted=(11,), label_changes=1), now=2.0)
        assert [(stamp(2), "neg")] == store.label_timeline(P)


class TestCumulativeByClass:
    def test_each_class_counts_up_in_time_order(self) -> None:
        """Every label adds one to its class's running count, in time order."""
        series = cumulative_by_class([(stamp(5), "pos"), (stamp(1), "pos"), (stamp(3), "neg")])
        expected = {
            "neg": [(datetime(2026, 11, 27, 21, 0, 3, tzinfo=UTC), 1)],
            "pos": [
                (datetime(2026, 11, 27, 21, 0, 1, tzinfo=UTC), 1),
                (datetime(2026, 11, 27, 21, 0, 5, tzinfo=UTC), 2),
            ],
        }
        assert expected == series


class TestVersionPoints:
    def test_versions_that_never_finished_training_are_left_out(self, store: Store) -> None:
        """A failed or still-training version has no quality to plot."""
        add_version(store, 1)
        add_version(store, 2, state="failed")
        store.create_version(P, name="aldaemon-v3", number=3, now=3.0)
        assert ["aldaemon-v1"] == [p.name for p in version_points(store.list_versions(P))]


class TestKappaOfPredictions:
    def test_only_tasks_both_versions_predicted_are_compared(self) -> None:
        """Tasks one version predicted and the other did not are ignored."""
        older = {1: "pos", 2: "neg", 3: "pos"}
        newer = {2: "neg", 3: "pos", 4: "neg"}
        assert (1.0, 2) == kappa_of_predictions(older, newer)


class TestConsecutiveAgreements:
    def test_artifacts_label_a_common_sample_of_current_tasks(self, filled: Store) -> None:
        """With every artifact on disk, each pair is compared on all 16 live tasks."""
        agreements = consecutive_agreements(filled, P, filled.list_versions(P))
        assert [("artifacts", 16), ("artifacts", 16)] == [(a.source, a.n_tasks) for a in agreements]

    def test_stored_predictions_stand_in_for_a_missing_artifact(self, store: Store) -> None:
        """Without artifacts, kappa comes from the predictions both versions stored."""
        fill_tasks(store, ["a", "b", "c", "d"], [])
        add_version(store, 1, predictions=predictions(["pos", "neg", "pos", "neg"]))
        add_version(store, 2, predictions=predictions(["pos", "neg", "neg", "neg"]))
        agreement = consecutive_agreements(store, P, store.list_versions(P))[0]
        assert ("stored predictions", 4, 0.5) == (
            agreement.source,
            agreement.n_tasks,
            agreement.kappa,
        )

    def test_a_pair_with_neither_source_has_no_kappa(self, store: Store) -> None:
        """A pruned version without an artifact cannot be compared: kappa is None."""
        fill_tasks(store, ["a"], [])
        add_version(store, 1)
        add_version(store, 2)
        agreement = consecutive_agreements(store, P, store.list_versions(P))[0]
        assert ("unavailable", None) == (agreement.source, agreement.kappa)


class TestRenderHtml:
    def data(self, labels: dict[str, int]) -> ReportData:
        return ReportData(
            project_id=P,
            generated_at=0.0,
            labels_per_class=labels,
            versions=(),
            class_timeline={},
            score_version=None,
            scores=(),
            agreements=(),
            active_version=None,
        )

    def test_label_names_are_escaped(self) -> None:
        """A label from a labeling config cannot inject markup into the page."""
        page = render_html(self.data({"<b>x</b>": 1}), images={})
        assert ("&lt;b&gt;x&lt;/b&gt; 1" in page, "<b>x</b>" in page) == (True, False)

    def test_a_project_without_versions_says_so(self) -> None:
        """Before the first training the page explains the empty table."""
        assert "No model version has been trained yet." in render_html(self.data({}), images={})


class TestWriteReport:
    def test_the_page_and_every_plot_are_written(
        self, filled: Store, state_dir: Path, tmp_path: Path
    ) -> None:
        """index.html and five PNG files land in the output directory."""
        out = tmp_path / "report"
        write_report(config_for(state_dir), project_id=P, out_dir=out)
        pngs = sorted(p.name for p in out.glob("*.png") if p.read_bytes().startswith(PNG_SIGNATURE))
        expected = ["agreement.png", "labels.png", "overview.png", "quality.png", "scores.png"]
        assert (True, expected) == ((out / "index.html").is_file(), pngs)

    def test_the_page_lists_each_version_with_its_cv_accuracy(
        self, filled: Store, state_dir: Path, tmp_path: Path
    ) -> None:
        """Every trained version has a row showing its cross-validated accuracy."""
        page = write_report(config_for(state_dir), project_id=P, out_dir=tmp_path / "r").read_text()
        rows = [
            f"<td>aldaemon-v{n}</td>" in page and f"{0.6 + 0.1 * n:.3f}" in page for n in (1, 2, 3)
        ]
        assert [True, True, True] == rows

    def test_the_score_plot_uses_the_active_version(self, filled: Store) -> None:
        """The score histogram shows the version annotators are served from, not the newest."""
        set_state(filled, "aldaemon-v3", "superseded")
        set_state(filled, "aldaemon-v2", "active")
        filled.save_predictions(P, "aldaemon-v2", [PredictionRecord(13, "pos", 0.42)])
        data = collect_report_data(filled, P, now=0.0)
        assert ("aldaemon-v2", (0.42,)) == (data.score_version, data.scores)

    def test_without_an_active_version_the_newest_predictions_are_shown(
        self, filled: Store
    ) -> None:
        """When nothing is active (all pruned or pinned away), the newest stored ones serve."""
        set_state(filled, "aldaemon-v3", "superseded")
        filled.drop_predictions(P, "aldaemon-v3")
        filled.save_predictions(P, "aldaemon-v2", [PredictionRecord(13, "pos", 0.42)])
        data = collect_report_data(filled, P, now=0.0)
        assert ("aldaemon-v2", (0.42,)) == (data.score_version, data.scores)

    def test_a_project_with_labels_but_no_version_gets_a_report(
        self, store: Store, state_dir: Path, tmp_path: Path
    ) -> None:
        """Plots without data show a note instead of failing."""
        fill_tasks(store, ["a"], [annotation(1, 1, "pos", second=1)])
        page = write_report(config_for(state_dir), project_id=P, out_dir=tmp_path / "r")
        assert page.is_file()

    def test_an_unknown_project_is_named_in_the_error(
        self, filled: Store, state_dir: Path, tmp_path: Path
    ) -> None:
        """Asking for a project local state never saw says which ones it has."""
        with pytest.raises(AldaemonError, match=r"nothing about project 99 \(projects there: 5\)"):
            write_report(config_for(state_dir), project_id=99, out_dir=tmp_path / "r")

    def test_a_missing_state_dir_is_an_error_not_a_new_database(self, tmp_path: Path) -> None:
        """The report never creates local state; it says the daemon has not run."""
        with pytest.raises(AldaemonError, match="has the daemon run yet"):
            write_report(config_for(tmp_path / "nothing"), project_id=P, out_dir=tmp_path / "r")

    def test_missing_matplotlib_names_the_extra_to_install(
        self, filled: Store, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without matplotlib the error says pip install 'aldaemon[report]'."""
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
        with pytest.raises(AldaemonError, match=r"pip install 'aldaemon\[report\]'"):
            write_report(config_for(state_dir), project_id=P, out_dir=tmp_path / "r")

    def test_the_command_prints_where_the_report_is(
        self, filled: Store, state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`aldaemon report` exits 0 and names the page it wrote."""
        token = tmp_path / "token"
        token.write_text("t0ken-t0ken\n")
        config = tmp_path / "config.toml"
        config.write_text(
            f'[labelstudio]\nurl = "http://127.0.0.1:8080"\ntoken_file = "{token}"\n'
            f'[state]\ndir = "{state_dir}"\n[[projects]]\nid = {P}\n'
        )
        out = tmp_path / "r"
        code = cli.main(["--config", str(config), "report", "--project", str(P), "--out", str(out)])
        assert (0, f"report written to {out / 'index.html'}\n") == (code, capsys.readouterr().out)
