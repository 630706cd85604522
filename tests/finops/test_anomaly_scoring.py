"""`finops.anomalies.score_series`: the pure scoring core, on deterministic series."""

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from finops.anomalies import PRODUCT_SETTINGS, ScoreSettings, episodes, score_series

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def rhythm(hour: datetime, base: float = 100.0) -> float:
    """Busy working hours, quiet nights, weekends at 40%."""
    day = 0.3 + 0.7 * max(0.0, math.sin(math.pi * (hour.hour - 6) / 14)) if 6 <= hour.hour <= 20 else 0.3
    return base * day * (0.4 if hour.weekday() >= 5 else 1.0)


def series(days: int, *, noise: float = 0.05, seed: int = 1, base: float = 100.0):
    rng = random.Random(seed)
    out = []
    for i in range(days * 24):
        at = START + timedelta(hours=i)
        out.append((at, rhythm(at, base) * (1 + rng.gauss(0, noise))))
    return out


def test_one_result_per_point_with_the_promised_fields():
    points = series(10)
    results = score_series(points)
    assert len(results) == len(points)
    assert [r.at for r in results] == [at for at, _ in points]
    first = results[0]
    assert first.expected is None and first.score is None and first.is_anomaly is False  # no history yet
    later = results[9 * 24 + 12]
    assert later.expected is not None and later.low is not None and later.high is not None
    assert later.low <= later.expected <= later.high


def test_seasonal_expectation_follows_hour_of_day_and_weekday():
    points = [(at, rhythm(at)) for at, _ in series(35, noise=0)]
    results = score_series(points)
    for r, (at, v) in list(zip(results, points, strict=True))[28 * 24 :]:
        assert r.expected == pytest.approx(v, rel=1e-6), at  # noiseless: the rhythm is learned exactly
        assert not r.is_anomaly
    # a Saturday noon is expected far below a Friday noon
    sat = next(r for r in results[28 * 24 :] if r.at.weekday() == 5 and r.at.hour == 12)
    fri = next(r for r in results[28 * 24 :] if r.at.weekday() == 4 and r.at.hour == 12)
    assert sat.expected < 0.5 * fri.expected


def test_clean_noisy_series_raises_no_alarm():
    results = score_series(series(60, noise=0.08, seed=7), settings=PRODUCT_SETTINGS["calls"])
    assert episodes(results) == []


def test_spike_is_flagged_in_its_first_hour_and_clears_with_hysteresis():
    points = series(30)
    spike_at = 28 * 24 + 11  # a weekday, 11:00
    for k in range(3):
        at, v = points[spike_at + k]
        points[spike_at + k] = (at, v * 4)
    results = score_series(points, settings=PRODUCT_SETTINGS["calls"])
    assert results[spike_at - 1].is_anomaly is False
    assert results[spike_at].is_anomaly is True
    assert results[spike_at].score >= PRODUCT_SETTINGS["calls"].open_z
    assert results[spike_at].value > results[spike_at].high
    assert results[spike_at + 2].episode_start == points[spike_at][0]
    # back in range: still open for clear_hours - 1 hour (hysteresis), then cleared
    assert results[spike_at + 3].is_anomaly is True
    assert results[spike_at + 4].is_anomaly is False
    assert episodes(results) == [(points[spike_at][0], points[spike_at + 3][0])]


def test_an_incident_is_not_learned_as_normal():
    points = series(40)
    start = 28 * 24
    for k in range(48):  # two days at 3x
        at, v = points[start + k]
        points[start + k] = (at, v * 3)
    results = score_series(points, settings=PRODUCT_SETTINGS["calls"])
    assert all(r.is_anomaly for r in results[start + 1 : start + 48] if r.value and r.value > 30)
    # a week later, the same hours are expected at their normal level, not at the incident's
    later = results[start + 7 * 24 + 12]
    assert later.expected == pytest.approx(rhythm(later.at), rel=0.15)


def test_excluded_hours_are_neither_flagged_nor_learned():
    points = series(40)
    start = 28 * 24
    for k in range(24):
        at, v = points[start + k]
        points[start + k] = (at, v * 5)
    excluded = [points[start + k][0] for k in range(24)]
    results = score_series(points, settings=PRODUCT_SETTINGS["calls"], exclude=excluded)
    assert not any(r.is_anomaly for r in results[start : start + 24])
    later = results[start + 7 * 24 + 12]
    assert later.expected == pytest.approx(rhythm(later.at), rel=0.15)


def test_minimum_volume_keeps_a_quiet_series_quiet():
    points = series(30, base=5.0, noise=0.0)
    spike_at = 28 * 24 + 11
    at, v = points[spike_at]
    points[spike_at] = (at, v * 5)  # 5x, but under 30 calls
    assert not any(r.is_anomaly for r in score_series(points, settings=PRODUCT_SETTINGS["calls"]))
    # the same shape at ten times the volume alerts
    loud = [(a, x * 10) for a, x in points]
    assert any(r.is_anomaly for r in score_series(loud, settings=PRODUCT_SETTINGS["calls"]))


def test_ratio_series_with_empty_hours_and_volumes():
    points = series(30)
    values = [(at, None if at.hour < 6 else 1000.0) for at, _ in points]
    volumes = [0.0 if at.hour < 6 else 100.0 for at, _ in points]
    bloat_at = 28 * 24 + 10
    values[bloat_at] = (values[bloat_at][0], 2000.0)
    results = score_series(values, settings=PRODUCT_SETTINGS["tokens_per_call"], volumes=volumes)
    assert results[3].value is None and results[28 * 24 + 3].score is None
    assert results[bloat_at].is_anomaly and not results[bloat_at - 1].is_anomaly


def test_drops_only_when_asked():
    points = series(30)
    at, v = points[28 * 24 + 12]
    points[28 * 24 + 12] = (at, 0.0)
    assert not any(r.is_anomaly for r in score_series(points))
    flagged = score_series(points, settings=ScoreSettings(detect_drops=True))
    assert flagged[28 * 24 + 12].is_anomaly


def test_causal_scoring_hour_by_hour_equals_scoring_at_once():
    points = series(20, noise=0.1, seed=3)
    at, v = points[15 * 24 + 12]
    points[15 * 24 + 12] = (at, v * 6)
    whole = score_series(points, settings=PRODUCT_SETTINGS["calls"])
    for k in range(14 * 24, len(points), 7):
        assert score_series(points[: k + 1], settings=PRODUCT_SETTINGS["calls"])[-1] == whole[k]


def test_rejects_gaps_and_mismatched_volumes():
    points = series(2)
    with pytest.raises(ValueError):
        score_series(points[:5] + points[6:])
    with pytest.raises(ValueError):
        score_series(points, volumes=[1.0])
    assert score_series([]) == []
