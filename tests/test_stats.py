"""lth_tf.stats against hand-derived values: for 2 degrees of freedom the t
distribution has a closed form, two-sided p = 1 - |t| / sqrt(t^2 + 2), and its
97.5% quantile is 4.3027."""
import math

import pytest

from lth_tf import report, stats


def test_three_seeds_are_tested_by_the_t_distribution_with_two_degrees_of_freedom():
    test = stats.difference([1.0, 2.0, 3.0])  # mean 2, sd 1, standard error 1/sqrt(3): t = 2 sqrt(3)
    t = 2 * math.sqrt(3)
    assert test.n == 3 and test.mean == 2
    assert test.p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)  # 0.074
    assert test.low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert test.high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    assert test.verdict() == "not shown"
    assert test.text() == "+2.0, 95% CI [-0.5, +4.5], p = 0.074, 3 seeds"


def test_two_standard_errors_over_three_seeds_is_not_a_finding():
    """The old rule (a mean beyond twice its standard error) at 3 seeds: t = 2, p = 1 - 2/sqrt(6) = 0.18."""
    spread = math.sqrt(3) / 2  # sd = spread, standard error spread/sqrt(3) = 1/2, mean 1: t = 2
    test = stats.difference([1 - spread, 1, 1 + spread])
    assert test.p == pytest.approx(1 - 2 / math.sqrt(6), rel=1e-9)
    assert test.verdict() == "not shown"
    assert report.beats([(1 - spread) / 100, 0.01, (1 + spread) / 100]).startswith("not shown (+1.0, ")


def test_a_difference_every_seed_agrees_on_is_shown_with_its_sign():
    assert stats.difference([4.0, 5.0, 6.0]).verdict() == "yes"  # t = 5 sqrt(3): p = 0.0127
    assert stats.difference([-4.0, -5.0, -6.0]).verdict() == "no"
    assert stats.difference([-4.0, -5.0, -6.0]).p == pytest.approx(1 - 75 ** 0.5 / math.sqrt(77), rel=1e-9)
    assert report.beats([0.04, 0.05, 0.06]).startswith("yes (+5.0, 95% CI [+2.5, +7.5], p = 0.013, 3 seeds)")


def test_one_seed_gets_no_test_and_missing_seeds_are_left_out():
    assert stats.difference([3.0]).text() == "+3.0, 1 seed" and stats.difference([3.0]).verdict() == "not shown"
    assert stats.difference([float("nan"), None, 3.0]).n == 1
    assert stats.difference([]) is None and report.beats([float("nan")]) == "-"
    same = stats.difference([0.0, 0.0])
    assert same.p == 1.0 and same.verdict() == "not shown"
