"""The benches' rule for tails (bench/stats.py): a p99 only from 100 samples or more, otherwise the maximum."""

from __future__ import annotations

from bench.stats import tail


def test_fewer_than_100_samples_give_the_maximum_not_a_p99():
    samples = [float(i) for i in range(1, 100)]  # 99 samples
    assert tail(samples) == ("max", 99.0)
    assert tail([3.0, 1.0, 2.0]) == ("max", 3.0)


def test_100_samples_give_a_p99_below_the_maximum():
    samples = [float(i) for i in range(1, 101)]
    label, value = tail(samples)
    assert label == "p99"
    assert value == 99.0 < max(samples)


def test_a_p95_needs_20_samples():
    assert tail([float(i) for i in range(19)], 0.95)[0] == "max"
    assert tail([float(i) for i in range(20)], 0.95) == ("p95", 18.0)
