"""The benchmarks' own arithmetic, which decides whether a target reads as met or missed.

It lives beside the benchmarks it checks; `bench` is in pytest's testpaths, so `make test`
runs it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import scipy.sparse

from bench import curves, ml_backend_digits
from bench.footprint import summarize_model
from bench.label_efficiency import keep_labeling, merge, plan, seed_review_indices, summarize
from bench.label_efficiency_batches import (
    greedy_dedup,
    lowest_first,
    one_per_cluster,
    random_order,
    take_in_order,
)
from bench.label_efficiency_features import (
    HASHED_2_18,
    TFIDF_REFERENCE,
    CachedFeatures,
    SeenColumnsOnly,
    matches_pipeline,
)
from bench.label_efficiency_multilabel import movie
from bench.label_efficiency_multilabel import result as multilabel_result
from bench.label_efficiency_ner import tweets_from_conll
from bench.label_efficiency_offline import served_order
from bench.label_efficiency_shapes import combine
from bench.label_efficiency_stats import Spread, paired, ratio_of_medians, sign_test, spread
from bench.label_efficiency_summary import contrasts


class TestLabelsNeeded:
    def test_first_point_at_or_above_the_target_counts(self) -> None:
        """The label count of the first point reaching the target is returned."""
        curve = [(50, 0.70), (100, 0.79), (150, 0.78), (200, 0.80)]

        assert 100 == curves.labels_needed(curve, target=0.79)

    def test_a_curve_that_never_reaches_the_target_gives_none(self) -> None:
        """A curve below the target throughout is censored: None, not its last count."""
        assert curves.labels_needed([(50, 0.70), (100, 0.75)], target=0.79) is None


class TestNormalizedArea:
    def test_constant_curve_has_its_value_as_area(self) -> None:
        """A flat curve's normalised area is its accuracy, whatever the spacing."""
        assert 0.8 == pytest.approx(curves.normalized_area([(50, 0.8), (60, 0.8), (1000, 0.8)]))

    def test_area_is_the_trapezoid_mean(self) -> None:
        """A straight line from 0.6 to 0.8 has mean 0.7."""
        assert 0.7 == pytest.approx(curves.normalized_area([(0, 0.6), (100, 0.8)]))

    def test_label_counts_that_do_not_ascend_are_refused(self) -> None:
        """Two points at the same label count are a bug upstream, not a zero-width slice."""
        with pytest.raises(ValueError, match="ascend"):
            curves.normalized_area([(50, 0.7), (50, 0.8)])


class TestCompareToRandom:
    def test_ratio_is_per_seed_and_median_is_over_seeds(self) -> None:
        """Ratios pair seeds; the median is taken over those ratios."""
        comparison = curves.compare_to_random([300, 500, 900], [1000, 1000, 1000], cap=4000)

        assert ((0.3, 0.5, 0.9), 0.5, False) == (
            comparison.ratios,
            comparison.median_ratio,
            comparison.censored,
        )

    def test_a_censored_run_counts_as_the_cap_and_is_flagged(self) -> None:
        """A random run that never reached the target counts as the cap, flagged censored."""
        comparison = curves.compare_to_random([500], [None], cap=1000)

        assert ((0.5,), True) == (comparison.ratios, comparison.censored)


class TestKeepLabeling:
    def test_below_the_cap_labeling_goes_on_even_after_the_target(self) -> None:
        """The learning curve always reaches the cap."""
        assert keep_labeling(labels=500, cap=1000, reached_target=True, pool_left=3500)

    def test_past_the_cap_labeling_stops_once_the_target_was_reached(self) -> None:
        """After the cap, labeling only continues for a run that missed the target so far."""
        assert (False, True) == (
            keep_labeling(labels=1000, cap=1000, reached_target=True, pool_left=3000),
            keep_labeling(labels=1000, cap=1000, reached_target=False, pool_left=3000),
        )

    def test_an_empty_pool_stops_labeling(self) -> None:
        """Nothing left to label ends the run whatever the accuracy."""
        assert not keep_labeling(labels=4000, cap=1000, reached_target=False, pool_left=0)


class TestSeedsAndPlan:
    def test_seed_labels_depend_only_on_the_seed(self) -> None:
        """Every sampler of one seed starts from the same reviews; another seed differs."""
        first = seed_review_indices(1, count=50, total=4000)

        assert (True, False) == (
            first == seed_review_indices(1, count=50, total=4000),
            first == seed_review_indices(2, count=50, total=4000),
        )

    def test_primary_samplers_get_every_seed_and_variants_fewer(self) -> None:
        """margin and random run on all seeds, other samplers on the variant seeds only."""
        order = plan(seeds=[0, 1], variant_seeds=[0], variants=["margin", "random", "entropy"])

        assert [
            ("margin", 0),
            ("random", 0),
            ("entropy", 0),
            ("margin", 1),
            ("random", 1),
        ] == order


class TestServedOrder:
    def test_without_clusters_lowest_scores_come_first(self) -> None:
        """Label Studio serves ascending score; ties go to the lower task id."""
        scores = {1: 0.5, 2: 0.1, 3: 0.1, 4: 0.9}

        picks = served_order(
            candidates=[1, 2, 3, 4],
            scores=scores,
            clusters=None,
            solved_clusters=Counter(),
            count=3,
        )

        assert [2, 3, 1] == picks

    def test_with_clusters_the_least_solved_cluster_comes_first(self) -> None:
        """A solved cluster moves back in line, so picks alternate between clusters."""
        scores = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}
        clusters = {1: 0, 2: 0, 3: 1, 4: 1}

        picks = served_order(
            candidates=[1, 2, 3, 4],
            scores=scores,
            clusters=clusters,
            solved_clusters=Counter({0: 1}),
            count=3,
        )

        assert [3, 1, 4] == picks


class TestModelSummary:
    def test_time_ratio_is_against_the_smallest_size_of_the_same_repetition(self) -> None:
        """Each repetition is compared with its own 1k run, then the median is taken."""
        rows = [
            {"repetition": r, "tasks": n, "stage": "s", "labels": 1, "pool": n, **t}
            for r, n, t in [
                (1, 1000, {"train_s": 1.0, "score_s": 1.0, "peak_rss_mib": 100.0}),
                (1, 10000, {"train_s": 2.0, "score_s": 8.0, "peak_rss_mib": 200.0}),
                (2, 1000, {"train_s": 2.0, "score_s": 2.0, "peak_rss_mib": 100.0}),
                (2, 10000, {"train_s": 4.0, "score_s": 16.0, "peak_rss_mib": 200.0}),
            ]
        ]

        summary = summarize_model(rows, smallest=1000)

        assert [1.0, 5.0] == [row["total_over_smallest"] for row in summary]


class TestSummarize:
    @staticmethod
    def run(variant: str, seed: int, accuracies: list[float]) -> dict[str, object]:
        curve = [
            {"labels": 50 * (i + 1), "accuracy": accuracy} for i, accuracy in enumerate(accuracies)
        ]
        return {"variant": variant, "seed": seed, "curve": curve}

    def test_labels_needed_past_the_cap_are_counted_not_censored(self) -> None:
        """A run that reaches the target after the cap reports its real label count."""
        runs = [
            self.run("random", 0, [0.5, 0.6, 0.7, 0.8]),
            self.run("margin", 0, [0.5, 0.8]),
        ]

        summary = summarize(runs, reference_accuracy=0.8, cap=100)

        random_row, margin_row = summary["variants"]
        assert (200.0, 100.0, 0.5, False) == (
            random_row["median_labels_needed"],
            margin_row["median_labels_needed"],
            margin_row["median_ratio_to_random"],
            margin_row["ratio_censored"],
        )

    def test_area_stops_at_the_cap(self) -> None:
        """Points past the cap find labels needed but do not enter the area."""
        runs = [self.run("random", 0, [0.6, 0.8, 0.0])]

        summary = summarize(runs, reference_accuracy=0.8, cap=100)

        assert 0.7 == summary["variants"][0]["median_area"]


class TestMerge:
    @staticmethod
    def document(runs: list[tuple[str, int, int]], *, step: int = 50) -> dict[str, object]:
        """A complete results file of (sampler, seed, labels needed) runs; target 0.792."""
        made = [
            {
                "variant": v,
                "seed": s,
                "curve": [{"labels": 50, "accuracy": 0.5}, {"labels": n, "accuracy": 0.8}],
            }
            for v, s, n in runs
        ]
        return {
            "command": "first",
            "finished_at": "t0",
            "complete": True,
            "settings": {
                "step": step,
                "cap": 1000,
                "seed_labels": 50,
                "max_labels": None,
                "seeds": [0, 1],
                "variant_seeds": [0],
                "variants": {v: v for v, _, _ in runs},
            },
            "reference": {"accuracy": 0.8},
            "runs": made,
            "summary": {},
            "machine": {},
        }

    def test_added_seeds_are_paired_with_random_on_the_same_seed(self) -> None:
        """entropy seed 1 from another file is compared with random seed 1, not seed 0."""
        main = self.document([("random", 0, 1000), ("random", 1, 400), ("entropy", 0, 500)])
        other = self.document([("entropy", 1, 200)])

        merged = merge(main, other, other_name="more", command="merge it")

        entropy = merged["summary"]["variants"][1]
        assert ([0.5, 0.5], [0, 1], "first", ["entropy seed 1"], "merge it") == (
            entropy["ratio_to_random"],
            merged["settings"]["variant_seeds"],
            merged["command"],
            merged["merged"][0]["runs"],
            merged["merged"][0]["merged_by"],
        )

    def test_runs_with_other_settings_or_the_same_seed_are_refused(self) -> None:
        """A different step, or a (sampler, seed) both files hold, cannot be merged."""
        main = self.document([("random", 0, 1000), ("entropy", 0, 500)])

        with pytest.raises(ValueError, match="step"):
            merge(main, self.document([("entropy", 1, 200)], step=100), other_name="o", command="")
        with pytest.raises(ValueError, match="entropy seed 0"):
            merge(main, self.document([("entropy", 0, 200)]), other_name="o", command="")


class TestMlBackendDigits:
    def test_seed_labels_hold_two_of_each_digit_and_depend_on_the_seed(self) -> None:
        """Both arms start from two labels per digit, chosen by the seed."""
        data = ml_backend_digits.Data()
        first, second = data.seed_labels(0), data.seed_labels(1)

        assert {d: 2 for d in range(10)} == Counter(int(data.targets[i]) for i in first)
        assert set(first) <= set(data.pool) and first != second

    def test_summary_gives_ratio_to_random_and_area_up_to_the_cap(self) -> None:
        """Labels needed per arm, their ratio, and each arm's area over [seed, cap]."""
        run = {
            "seed": 0,
            "aldaemon": [(20, 0.5), (40, 0.96), (60, 0.97)],
            "random": [(20, 0.5), (40, 0.8), (60, 0.9), (80, 0.96)],
        }

        summary = ml_backend_digits.summarize([run], cap=60, target=0.95)

        seed = summary["per_seed"][0]
        assert (40, 80, 0.5) == (
            seed["aldaemon_labels_needed"],
            seed["random_labels_needed"],
            seed["ratio"],
        )
        assert seed["aldaemon_aulc"] > seed["random_aulc"]


class TestShapeData:
    def test_conll_tweets_become_texts_with_spans_at_code_point_offsets(self) -> None:
        """Tokens join with one space; B/I runs of kept types become spans, others vanish."""
        lines = [
            "Zoë\tB-person\n",
            "Brontë\tI-person\n",
            "in\tO\n",
            "Zürich\tI-geo-loc\n",
            "with\tO\n",
            "Acme\tB-movie\n",
            "\n",
            "nothing\tO\n",
        ]

        first, second = tweets_from_conll(lines, types=("person", "geo-loc"))

        assert (
            "Zoë Brontë in Zürich with Acme",
            ["Zoë Brontë", "Zürich"],
            ["person", "geo-loc"],
            (),
        ) == (
            first.text,
            [first.text[s:e] for s, e, _ in first.spans],
            [label for _, _, label in first.spans],
            second.spans,
        )

    def test_a_movie_shows_title_and_year_and_keeps_only_the_configured_genres(self) -> None:
        """Genres outside GENRES are dropped; a movie may keep none (an empty answer)."""
        kept = movie("Dumbo", 1941.0, "Animation|Children|Drama|Musical")
        none = movie("Fantasia", 1940.0, "Animation|Musical")

        assert ("Dumbo (1941)", ("Drama",), (), []) == (
            kept.text,
            kept.genres,
            none.genres,
            multilabel_result(none),
        )


class TestCombine:
    @staticmethod
    def part(runs: list[tuple[str, int, int]], *, cap: int = 1000) -> dict[str, object]:
        """A complete entity-F1 results file of (sampler, seed, labels needed) runs."""
        curve = [{"labels": 50, "entity_f1": 0.1}]
        return {
            "benchmark": "part",
            "command": "c",
            "finished_at": "t",
            "machine": {},
            "complete": True,
            "metric": "entity_f1",
            "dataset": {"package": "p"},
            "reference": {"entity_f1": 0.4},
            "settings": {"step": 50, "cap": cap, "seed_labels": 50, "variants": {}},
            "runs": [
                {"variant": v, "seed": s, "curve": [*curve, {"labels": n, "entity_f1": 0.4}]}
                for v, s, n in runs
            ],
        }

    def test_parts_run_apart_are_summarized_together_seed_by_seed(self) -> None:
        """margin seed 1 from one file is compared with random seed 1 from another."""
        joined = combine(
            [
                self.part([("random", 1, 800), ("margin", 0, 300)]),
                self.part([("margin", 1, 400), ("random", 0, 600)]),
            ],
            parts=["a", "b"],
            command="combine",
        )

        margin = next(r for r in joined["summary"]["variants"] if r["variant"] == "margin")
        assert ([0, 1], [0.5, 0.5], 0.396) == (
            joined["settings"]["seeds"],
            margin["ratio_to_random"],
            joined["summary"]["target_entity_f1"],
        )

    def test_parts_with_other_settings_or_a_repeated_run_are_refused(self) -> None:
        """Another cap, or the same (sampler, seed) twice, cannot be combined."""
        with pytest.raises(ValueError, match="settings"):
            combine([self.part([]), self.part([], cap=500)], parts=["a", "b"], command="")
        with pytest.raises(ValueError, match="two parts"):
            combine(
                [self.part([("random", 0, 5)]), self.part([("random", 0, 5)])],
                parts=["a", "b"],
                command="",
            )


class TestSeedStatistics:
    def test_spread_gives_median_quartiles_and_range(self) -> None:
        """Inclusive quartiles of 1..5 are 2 and 4; the range is the extremes."""
        assert Spread(3.0, 2.0, 4.0, 1.0, 5.0) == spread([5, 1, 4, 2, 3])

    def test_sign_test_of_nine_wins_in_ten_is_beyond_noise_and_eight_is_not(self) -> None:
        """Exact two-sided p: 22/1024 for 9-1, 112/1024 for 8-2; ties are dropped."""
        nine = sign_test([1.0] * 9 + [-1.0])
        eight = sign_test([1.0] * 8 + [-1.0, -1.0, 0.0])

        assert (9, 1, pytest.approx(22 / 1024)) == nine
        assert (8, 2, pytest.approx(112 / 1024)) == eight

    def test_paired_labels_are_ratios_per_seed_and_a_win_needs_fewer_labels(self) -> None:
        """Seed by seed: 500/1000 and 900/600; one win, one loss."""
        result = paired({0: 500, 1: 900}, {0: 1000, 1: 600, 2: 700}, lower_is_better=True)

        assert ([0, 1], [0.5, 1.5], 1, 1) == (
            result["seeds"],
            result["per_seed"],
            result["wins"],
            result["losses"],
        )

    def test_paired_area_is_a_difference_and_a_win_is_a_larger_area(self) -> None:
        """An equal area is neither a win nor a loss."""
        result = paired({0: 0.80, 1: 0.75}, {0: 0.78, 1: 0.75}, lower_is_better=False)

        assert ([0.02, 0.0], 1, 0) == (result["per_seed"], result["wins"], result["losses"])

    def test_ratio_of_medians_differs_from_the_median_of_ratios(self) -> None:
        """The two ratios the tables name apart: 600/1000 here, while the paired one is 1.0."""
        mine, theirs = {0: 400, 1: 600, 2: 2000}, {0: 400, 1: 1000, 2: 2000}

        assert (0.6, 1.0) == (
            ratio_of_medians(list(mine.values()), list(theirs.values())),
            paired(mine, theirs, lower_is_better=True)["spread"]["median"],
        )


class TestBatchPicks:
    def test_lowest_scores_first_ties_by_row(self) -> None:
        """Rows 7 and 3 tie at 0.1: the lower row first."""
        assert [3, 7, 9] == lowest_first([0.2, 0.1, 0.5, 0.1], [9, 7, 5, 3], 3)

    def test_random_order_is_taken_in_order_skipping_labeled_rows(self) -> None:
        """A permutation of every row; the picks are its first rows still in the pool."""
        order = random_order(4, 10)

        assert (sorted(order), [r for r in order if r in {1, 2, 3}][:2]) == (
            list(range(10)),
            take_in_order(order, [1, 2, 3], 2),
        )

    def test_one_per_cluster_keeps_each_clusters_lowest_score(self) -> None:
        """Cluster 0 gives row 12 (0.1), 1 gives 11 (0.2), 2 gives 14; lowest first."""
        picks = one_per_cluster([0, 1, 0, 1, 2], [0.3, 0.2, 0.1, 0.4, 0.9], [10, 11, 12, 13, 14])

        assert [12, 11, 14] == picks

    def test_greedy_dedup_skips_rows_too_close_to_a_kept_one(self) -> None:
        """Row 1 duplicates row 0 and is skipped; row 2 is orthogonal and kept."""
        rows = scipy.sparse.csr_matrix([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])

        assert [0, 2] == list(greedy_dedup(rows, count=2, max_cosine=0.5))


class TestCachedFeatures:
    TEXTS = (
        "great coffee, would buy again",
        "not good at all",
        "great tea and great price",
        "stale, not fresh, not good",
        "the best snack ever",
        "awful taste; never again",
    )
    LABELS = ("great", "other", "great", "other", "great", "other")

    @pytest.mark.parametrize(
        "ref",
        [
            TFIDF_REFERENCE,
            HASHED_2_18,
            "bench.label_efficiency_features:make_hashed_2_20_seen_only",
        ],
    )
    def test_cached_fit_predicts_what_the_factorys_pipeline_predicts(self, ref: str) -> None:
        """Fitted on 4 texts, both agree on the other 2 to rounding, vocabulary or hashed."""
        cache = CachedFeatures(ref, self.TEXTS)

        difference = matches_pipeline(
            cache, self.TEXTS, train=[0, 1, 2, 3], labels=self.LABELS[:4], check=[4, 5]
        )

        assert difference < 1e-9

    def test_seen_columns_only_zeroes_the_columns_no_training_row_used(self) -> None:
        """Column 2 is empty in training, so a new text's count there is dropped."""
        step = SeenColumnsOnly().fit(scipy.sparse.csr_matrix([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))

        assert [[3.0, 4.0, 0.0]] == step.transform(
            scipy.sparse.csr_matrix([[3.0, 4.0, 5.0]])
        ).toarray().tolist()


class TestSeedsSummary:
    @staticmethod
    def run(sampler: str, every: int, seed: int, reaches_at: int, model: str) -> dict[str, object]:
        """A curve at 0.70 that jumps to 0.80 at `reaches_at` labels."""
        return {
            "model": model,
            "sampler": sampler,
            "retrain_every": every,
            "seed": seed,
            "curve": [
                {"labels": n, "accuracy": 0.80 if n >= reaches_at else 0.70}
                for n in (50, 100, 150, 200)
            ],
        }

    def test_a_factor_is_paired_with_the_daemons_setting_and_a_model_with_todays(self) -> None:
        """margin every 25 against margin every 50 (same model), hashed against tfidf."""
        hashed = "bench.label_efficiency_features:make_hashed_2_20"
        runs = [
            self.run("random", 25, 0, 200, TFIDF_REFERENCE),
            self.run("margin", 50, 0, 200, TFIDF_REFERENCE),
            self.run("margin", 25, 0, 100, TFIDF_REFERENCE),
            self.run("margin", 50, 0, 150, hashed),
        ]
        targets = {TFIDF_REFERENCE: 0.79, hashed: 0.79}

        rows = contrasts(runs, targets=targets, cap=200, common=0.79)

        assert [
            ("factor", "tfidf", "margin, every 25", [0.5]),
            ("model", "hashed_2_20", "margin, every 50", [0.75]),
        ] == [(r["kind"], r["model"], r["config"], r["labels_ratio"]["per_seed"]) for r in rows]


def test_the_daemons_default_model_is_the_seen_only_hashed_candidate() -> None:
    """BENCHMARKS.md's verdict on the default model rests on this: the daemon's default
    (aldaemon/model/default.py) predicts what `hashed_2_20_seen_only` predicts."""
    from aldaemon.model.default import make_text_classifier
    from bench.label_efficiency_features import make_hashed_2_20_seen_only

    texts = [f"review {i}: {'great' if i % 3 else 'awful'} food number {i % 7}" for i in range(60)]
    labels = ["pos" if i % 3 else "neg" for i in range(60)]
    unseen = ["great food", "awful", "words never seen before at all"]
    default = make_text_classifier().fit(texts, labels).predict_proba(unseen)
    candidate = make_hashed_2_20_seen_only().fit(texts, labels).predict_proba(unseen)
    assert abs(default - candidate).max() < 1e-5


def test_resync_memory_variants_find_the_same_deleted_tasks(tmp_path: Path) -> None:
    """bench/resync_memory compares its reference (sets) with the daemon's packed ids: on
    a small store both find exactly the tasks its listing leaves out."""
    from bench import resync_memory

    resync_memory.fill_store(tmp_path, 2000)
    found = [resync_memory.compare(v, tmp_path, 2000)["deleted"] for v in resync_memory.VARIANTS]
    assert [list(range(200, 2001, 200))] * 2 == found


def test_pool_chunk_plans_old_and_new_reads_agree(tmp_path: Path) -> None:
    """bench/pool_chunk_plans times the joined query of 7cc7fd3^ (its reference) against
    the store's unlabeled_chunk; on a small SQLite store both read the same rows, labeled
    tasks left out, features where the first half has them."""
    from aldaemon.store import Store
    from bench import pool_chunk_plans as plans

    with Store.open(tmp_path) as store:
        plans.fill_tasks(store, 2000)
        plans.fill_features(store, 2000)
        for after in plans.cursors(2000):
            old = plans.old_chunk(store, after, limit=300)
            assert old == plans.new_chunk(store, after, limit=300)
            assert 300 == len(old)
            assert all(row.task_id % plans.LABEL_EVERY for row in old)
            assert all((row.features is not None) == (row.task_id <= 1000) for row in old)
