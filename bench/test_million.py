"""The million-task benchmark's synthetic pool and its verdicts (bench/million*.py)."""

from __future__ import annotations

from typing import Any

from bench.million import verdicts
from bench.million_setup import LABELS, LEANING_WORDS, TEXT_LENGTH, SyntheticPool


class TestSyntheticPool:
    def test_every_text_is_exactly_200_characters_and_repeatable(self) -> None:
        """Texts have the issue's length, and the same index gives the same text twice."""
        pool = SyntheticPool(500)

        texts = [pool.text(i) for i in range(500)]

        assert ({TEXT_LENGTH}, texts) == (
            {len(t) for t in texts},
            [pool.text(i) for i in range(500)],
        )

    def test_texts_are_distinct(self) -> None:
        """A pool of distinct tasks: no text repeats among a thousand."""
        pool = SyntheticPool(1000)

        assert 1000 == len({pool.text(i) for i in range(1000)})

    def test_a_texts_leaning_words_are_those_of_its_label(self) -> None:
        """The label is learnable: a text holds more words leaning to its own label."""
        pool = SyntheticPool(400)
        vocabulary: list[str] = pool._vocabulary  # type: ignore[attr-defined]
        leaning = {
            label: set(vocabulary[i * LEANING_WORDS : (i + 1) * LEANING_WORDS])
            for i, label in enumerate(LABELS)
        }

        agree = 0
        for index in range(400):
            words = pool.text(index).split()
            own = sum(w in leaning[pool.label(index)] for w in words)
            other = sum(w in leaning[LABELS[LABELS[0] == pool.label(index)]] for w in words)
            agree += own > other

        assert agree >= 360  # about a fifth of ~30 words lean; a tie or worse is rare


def _size(tasks: int, *, freshness: float, ratio: float, daemon: float, worker: float) -> Any:
    peaks = {"daemon": daemon, "model_worker": worker}
    return {
        "tasks": tasks,
        "median": {"freshness_s": freshness, "freshness_over_import": ratio},
        "peak_rss_mib_by_phase": {"first_sync": peaks, "warm_up": peaks, "cycle": peaks},
        "idle": {"settled_requests_max": 2},
    }


class TestVerdicts:
    def test_targets_met_and_missed_are_named(self) -> None:
        """1.3 x at 10k, 15 s and 300/400 MiB at 1M, 2 idle requests: each read alike."""
        sizes = [
            _size(10_000, freshness=5.0, ratio=1.31, daemon=100, worker=100),
            _size(1_000_000, freshness=15.0, ratio=9.0, daemon=301, worker=400),
        ]

        assert [
            "freshness at 10k 1.31 x bare import: MISSED",
            "freshness at 1M 15.0 s: met",
            "daemon RSS at 1M 301 MiB: MISSED",
            "worker RSS at 1M 400 MiB: met",
            "idle poll at 10,000: 2 requests: met",
            "idle poll at 1,000,000: 2 requests: met",
        ] == verdicts(sizes)
