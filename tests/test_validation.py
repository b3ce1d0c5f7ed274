"""What each validation decides, without training: best, early stopping, kept checkpoints,
the messages, and a restored tracker deciding as the uninterrupted one."""

from __future__ import annotations

import math

import pytest

from seq2seq.validation import ValidationTracker

# Validations 1..7 (steps 10..70); either way the best is at validation 4, validations 5
# and 6 do not improve, the 7th would.
SCORES = {
    "bleu": [10.0, 30.0, 20.0, 40.0, 5.0, 1.0, 50.0],
    "loss": [5.0, 3.0, 4.0, 2.0, 6.0, 7.0, 1.0],
}


def decisions(tracker: ValidationTracker, values: list[float], first_step: int = 10) -> list:
    return [tracker.update(value, first_step + 10 * i) for i, value in enumerate(values)]


@pytest.mark.parametrize("metric", ["bleu", "loss"])
def test_best_stop_and_kept_follow_the_metrics_direction(metric: str) -> None:
    tracker = ValidationTracker(metric, patience=2, keep=2)
    verdicts = decisions(tracker, SCORES[metric])
    sign = -1.0 if metric == "loss" else 1.0
    assert [v.score for v in verdicts] == [sign * value for value in SCORES[metric]]
    assert [v.improved for v in verdicts] == [True, True, False, True, False, False, True]
    assert [v.stop for v in verdicts] == [False, False, False, False, False, True, False]
    assert [v.keep for v in verdicts] == [True, True, True, True, False, False, True]
    assert [v.dropped for v in verdicts] == [[], [], [10], [30], [50], [60], [20]]
    assert tracker.best == sign * SCORES[metric][6] and tracker.bad_validations == 0
    assert tracker.kept == [[sign * SCORES[metric][6], 70], [sign * SCORES[metric][3], 40]]


def test_without_patience_a_run_never_stops_early() -> None:
    verdicts = decisions(ValidationTracker("bleu", patience=None, keep=0), [5.0] + [1.0] * 9)
    assert not any(v.stop for v in verdicts)
    assert not any(v.keep or v.dropped for v in verdicts)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_score_is_never_the_best(value: float) -> None:
    tracker = ValidationTracker("loss", patience=None, keep=0)
    (verdict,) = decisions(tracker, [value])
    assert not verdict.improved and tracker.best is None and tracker.bad_validations == 1
    assert decisions(tracker, [9.0])[0].improved


def test_describe() -> None:
    """The message of a validation, made right after it."""
    tracker = ValidationTracker("chrf", patience=2, keep=0)
    described = [tracker.describe(tracker.update(value, 1)) for value in (50.0, 40.0, 45.0)]
    assert described == [
        " (new best)",
        " (no improvement for 1)",
        " (no improvement for 2); early stopping: chrf did not improve for 2",
    ]


def test_a_restored_tracker_decides_as_the_uninterrupted_one() -> None:
    values = SCORES["loss"]
    uninterrupted = ValidationTracker("loss", patience=3, keep=2)
    expected = decisions(uninterrupted, values)
    interrupted = ValidationTracker("loss", patience=3, keep=2)
    decisions(interrupted, values[:3])
    restored = ValidationTracker("loss", patience=3, keep=2)
    restored.load_state_dict(interrupted.state_dict())
    assert set(interrupted.state_dict()) == {"best", "bad_validations", "kept"}
    assert decisions(restored, values[3:], first_step=40) == expected[3:]


def test_a_score_equal_to_the_best_is_no_improvement_and_keeps_the_later_step() -> None:
    tracker = ValidationTracker("bleu", patience=1, keep=1)
    first, same = tracker.update(20.0, 10), tracker.update(20.0, 20)
    assert first.improved and not same.improved and same.stop
    assert same.keep and same.dropped == [10]  # among equal scores the later step ranks first
    assert tracker.kept == [[20.0, 20]]
