"""Several `<Choices>` on one task: every control's answer in one tuple of codes.

A project that learns several controls (e.g. sentiment AND topic) carries an
annotation's answer, as every other shape does, as a tuple of strings (`labels`, see
records.AnnotationRecord and sync/span_answers.py), one code per chosen label:

    "control:label"      control: the `<Choices>` name; label as results spell it
                         (a label may hold ':'; the control name is cut at the first one)

The schema's `labels` are the codes of every label of every learned control, so the
checks that compare an answer with the config (labels removed from the config, labels
a version predicts) work on codes unchanged. Per control, an annotation without a code
of that control answers nothing for a single-choice control (it does not train it) and
"none of these" for a multi-label one (it trains its negatives), exactly as when the
control is learned alone. This module is the only place that writes or reads the code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aldaemon.sync.config_shapes import MultiChoice, ServedControl


def encode_choice(control: str, label: str) -> str:
    return f"{control}:{label}"


def decode_choice(code: str) -> tuple[str, str]:
    control, _, label = code.partition(":")
    return control, label


def control_codes(controls: Sequence[ServedControl]) -> tuple[str, ...]:
    """Every label of every control, as codes, in control then label order."""
    return tuple(encode_choice(c.name, label) for c in controls for label in c.labels)


def code_counts(answers: Iterable[Sequence[str]], codes: Sequence[str]) -> dict[str, int]:
    """Per code in `codes`, how often the answers hold it; other codes are not counted."""
    counts = dict.fromkeys(codes, 0)
    for task_codes in answers:
        for code in task_codes:
            if code in counts:
                counts[code] += 1
    return counts


def answers_of(codes: Iterable[str], control: str) -> tuple[str, ...]:
    """The labels `control` holds in an answer, in order."""
    return tuple(label for name, label in map(decode_choice, codes) if name == control)


def controls_cold_start_counts(
    answers: Sequence[Sequence[str]], controls: Sequence[ServedControl]
) -> dict[str, int]:
    """Per code, the count `min_per_class` is held against, control by control.

    A single-choice control: the examples choosing the label. A multi-label control: the
    smaller of its positives and negatives (see sync/label_sets.py). Every control must
    be out of its own cold start before the project trains.
    """
    counts: dict[str, int] = {}
    for control in controls:
        per_answer = [answers_of(codes, control.name) for codes in answers]
        for label in control.labels:
            positives = sum(1 for chosen in per_answer if label in chosen)
            if isinstance(control, MultiChoice):
                positives = min(positives, len(per_answer) - positives)
            counts[encode_choice(control.name, label)] = positives
    return counts
