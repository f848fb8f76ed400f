"""labkit.stats: intervals and tests, checked against values worked out by hand."""
import math

import numpy as np
import pytest
import torch

from labkit import stats
from labkit.errors import LabkitError

Z2 = 1.96**2  # 3.8416, used in the Wilson arithmetic below


# ---------------------------------------------------------------------------
# wilson
# ---------------------------------------------------------------------------
# Wilson: center = (k + z²/2) / (n + z²), half = z·sqrt(k(n-k)/n + z²/4) / (n + z²).
def test_wilson_zero_and_all_successes_are_clipped_exactly():
    # k=0, n=10: center = 1.9208/13.8416 = 0.138770, half = 1.96·0.98/13.8416 = the same,
    # so low = 0 (exactly, not 1e-17) and high = 2·0.138770 = 0.277540.
    low, high = stats.wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.277540, abs=1e-6)
    # k=n=10 mirrors it: (1 - 0.277540, 1.0).
    low, high = stats.wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.722460, abs=1e-6)
    # Unclipped, center + half rounds to 1.0000000000000002 or 0.9999999999999999 here.
    assert stats.wilson(32, 32, z=2.576)[1] == 1.0 and stats.wilson(11, 11, z=1.645)[1] == 1.0


def test_wilson_matches_hand_computed_intervals():
    # k=5, n=10: center = (5 + 1.9208)/13.8416 = 0.5;
    # half = 1.96·sqrt(2.5 + 0.9604)/13.8416 = 1.96·1.860215/13.8416 = 0.263410.
    assert stats.wilson(5, 10) == pytest.approx((0.236590, 0.763410), abs=1e-5)
    # k=81, n=263: center = 82.9208/266.8416 = 0.310749;
    # k(n-k)/n = 81·182/263 = 56.05323, +0.9604 = 57.01363, sqrt = 7.550737,
    # half = 1.96·7.550737/266.8416 = 0.055462  ->  (0.25529, 0.36621).
    assert stats.wilson(81, 263) == pytest.approx((0.25529, 0.36621), abs=1e-5)
    # A wider z gives a wider interval around the same center.
    assert stats.wilson(5, 10, z=2.576)[0] < stats.wilson(5, 10)[0]


@pytest.mark.parametrize("k, n, message", [(-1, 10, "between 0 and n"), (11, 10, "between 0 and n"),
                                           (0, 0, "positive"), (1.5, 10, "whole number"),
                                           (5, 10.0, "whole number")])
def test_wilson_rejects_bad_counts(k, n, message):
    with pytest.raises(LabkitError, match=message):
        stats.wilson(k, n)


def test_labkit_error_is_a_value_error():
    with pytest.raises(ValueError):
        stats.wilson(3, 2)


# ---------------------------------------------------------------------------
# bootstrap_ci
# ---------------------------------------------------------------------------
def test_bootstrap_two_values_gives_hand_computed_percentiles():
    # Values [0, 1]: a resample's mean is 0 (prob 1/4), 0.5 (1/2) or 1 (1/4).
    # The 2.5% and 97.5% quantiles of that are 0 and 1.
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    # At level 0.4 the middle 40% (quantiles 0.3 and 0.7) both fall on 0.5.
    assert stats.bootstrap_ci([0.0, 1.0], level=0.4) == (0.5, 0.5)


def test_bootstrap_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(123)
    small, large = rng.normal(5, 2, 20), rng.normal(5, 2, 2000)
    lo_s, hi_s = stats.bootstrap_ci(small)
    lo_l, hi_l = stats.bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # The width goes like 1/sqrt(n): 100x the items, about 10x narrower.
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    # 2000 normal values with sd 2: half-width ~ 1.96·2/sqrt(2000) = 0.088.
    assert (hi_l - lo_l) / 2 == pytest.approx(0.088, abs=0.01)


def test_bootstrap_is_deterministic_and_takes_tensors_and_custom_stats():
    values = np.random.default_rng(0).random(50)
    assert stats.bootstrap_ci(values, seed=3) == stats.bootstrap_ci(values, seed=3)
    assert stats.bootstrap_ci(values, seed=3) != stats.bootstrap_ci(values, seed=4)
    assert stats.bootstrap_ci(torch.tensor(values)) == stats.bootstrap_ci(list(values))
    # A plain callable goes through the row-by-row path but must see the same resamples.
    by_hand = stats.bootstrap_ci(values, stat=lambda x: float(np.mean(x)))
    assert by_hand == pytest.approx(stats.bootstrap_ci(values), abs=1e-12)


def test_bootstrap_single_value_and_errors():
    assert stats.bootstrap_ci([0.7]) == (0.7, 0.7)
    with pytest.raises(LabkitError, match="empty"):
        stats.bootstrap_ci([])
    with pytest.raises(LabkitError, match="1-D"):
        stats.bootstrap_ci([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(LabkitError, match="NaN"):
        stats.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(LabkitError, match="level"):
        stats.bootstrap_ci([1.0, 2.0], level=95)


# ---------------------------------------------------------------------------
# paired_bootstrap
# ---------------------------------------------------------------------------
def test_paired_identical_arms_give_zero_and_p_one():
    a = np.random.default_rng(1).random(100) < 0.6
    r = stats.paired_bootstrap(a, a.copy())
    assert (r.diff, r.low, r.high, r.p, r.n) == (0.0, 0.0, 0.0, 1.0, 100)
    assert r.describe() == "no measurable difference"


def test_paired_constant_shift_gives_the_shift_as_interval():
    b = np.random.default_rng(2).normal(3.0, 1.0, 80)  # per-item losses
    r = stats.paired_bootstrap(b + 0.25, b)
    assert r.diff == pytest.approx(0.25, abs=1e-12)
    assert r.low == pytest.approx(0.25, abs=1e-12) and r.high == pytest.approx(0.25, abs=1e-12)
    assert r.p == 0.0 and "p < 0.0001" in str(r)  # no resample crossed zero


def test_paired_resamples_the_same_items_for_both_arms():
    # Items vary a lot (sd 10) but a beats b by 0.1 on every one (noise 0.01).
    # Paired: half-width ~ 1.96·0.01/sqrt(200) = 0.0014. Resampling a and b
    # independently would give ~ 1.96·10·sqrt(2)/sqrt(200) = 1.96.
    rng = np.random.default_rng(3)
    b = rng.normal(0, 10, 200)
    a = b + 0.1 + rng.normal(0, 0.01, 200)
    r = stats.paired_bootstrap(a, b)
    assert r.high - r.low < 0.01 and r.low > 0 and r.p < 0.001


def test_paired_on_correctness_vectors():
    # a right on 60 items, b on 50, b's right items a subset of a's: the per-item
    # difference is 1 on 10 items and 0 on 90, so diff = 0.1 and the bootstrap sd is
    # sqrt(0.1·0.9/100) = 0.03: interval about 0.1 ± 0.059. P(resample has no 1) = 0.9^100 = 3e-5.
    a = np.array([True] * 60 + [False] * 40)
    b = np.array([True] * 50 + [False] * 50)
    r = stats.paired_bootstrap(a, b)
    assert r.diff == pytest.approx(0.1)
    assert 0.03 < r.low < 0.06 and 0.14 < r.high < 0.17 and r.p < 0.01
    assert r.describe("pp") == f"higher by {r.low:.3g} to {r.high:.3g} pp"
    assert r.as_dict()["n"] == 100 and set(r.as_dict()) >= {"diff", "low", "high", "p", "n"}
    assert stats.paired_bootstrap(torch.tensor(a), torch.tensor(b)) == r


def test_paired_no_effect_gives_large_p():
    # Two independent coins on the same 400 items: no true difference.
    rng = np.random.default_rng(4)
    r = stats.paired_bootstrap(rng.random(400) < 0.5, rng.random(400) < 0.5)
    assert r.low < 0 < r.high and r.p > 0.05


def test_paired_str_is_the_sentence_fragment():
    r = stats.PairedResult(diff=0.04, low=-0.01, high=0.09, p=0.1234, n=100)
    assert str(r) == "+0.040 [\u22120.010, +0.090], p = 0.12 (n = 100 paired items)"


def test_paired_rejects_mismatched_or_empty_arms():
    with pytest.raises(LabkitError, match="same items"):
        stats.paired_bootstrap([1, 0, 1], [1, 0])
    with pytest.raises(LabkitError, match="empty"):
        stats.paired_bootstrap([], [])


# ---------------------------------------------------------------------------
# mcnemar
# ---------------------------------------------------------------------------
def _pairs(b, c, both=0, neither=0):
    """Correctness vectors with b items only a got right, c only b got right."""
    a = [1] * b + [0] * c + [1] * both + [0] * neither
    other = [0] * b + [1] * c + [1] * both + [0] * neither
    return a, other


def test_mcnemar_exact_case():
    # b=1, c=6: X ~ Binom(7, 1/2), P(X <= 1) = (C(7,0) + C(7,1))/2^7 = 8/128; p = 16/128.
    r = stats.mcnemar(*_pairs(1, 6, both=20, neither=3))
    assert (r.b, r.c, r.exact) == (1, 6, True) and r.p == pytest.approx(0.125, abs=1e-12)
    # b=20, c=4 (b+c = 24, still exact): P(X <= 4) = (1 + 24 + 276 + 2024 + 10626)/2^24
    # = 12951/16777216, p = 2·that = 0.0015439.
    r = stats.mcnemar(*_pairs(20, 4))
    assert r.exact and r.p == pytest.approx(25902 / 16777216, rel=1e-12)
    # b=c=3: P(X <= 3) = 42/64 > 1/2, so 2·that is capped at 1.
    assert stats.mcnemar(*_pairs(3, 3)).p == 1.0


def test_mcnemar_chi_square_case():
    # b=30, c=10: statistic (|30-10| - 1)²/40 = 361/40 = 9.025, p = erfc(sqrt(9.025/2)) = 0.002663.
    r = stats.mcnemar(*_pairs(30, 10, both=50))
    assert (r.b, r.c, r.exact, r.n) == (30, 10, False, 90)
    assert r.statistic == pytest.approx(9.025) and r.p == pytest.approx(0.0026631, abs=1e-6)
    # b=20, c=5 (b+c = 25: chi-square): (15-1)²/25 = 7.84, p = erfc(sqrt(3.92)) = 0.005110.
    r = stats.mcnemar(*_pairs(20, 5))
    assert not r.exact and r.statistic == pytest.approx(7.84) and r.p == pytest.approx(0.005110, abs=1e-5)


def test_mcnemar_counts_only_disagreements_and_takes_tensors():
    a = torch.tensor([True, True, False, False, True, False])
    b = torch.tensor([True, False, True, False, False, False])
    r = stats.mcnemar(a, b)  # only-a: items 1 and 4; only-b: item 2
    assert (r.b, r.c, r.n) == (2, 1, 6) and r.as_dict()["exact"] is True
    agree = stats.mcnemar([1, 0, 1], [1, 0, 1])
    assert (agree.b, agree.c, agree.p) == (0, 0, 1.0)


def test_mcnemar_rejects_bad_inputs():
    with pytest.raises(LabkitError, match="same items"):
        stats.mcnemar([1, 0], [1])
    with pytest.raises(LabkitError, match="correctness"):
        stats.mcnemar([0.5, 1], [1, 1])


def test_mcnemar_matches_scipy_when_available():
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in [(1, 6), (7, 2), (0, 5), (12, 11)]:
        expected = scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
        assert stats.mcnemar(*_pairs(b, c)).p == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------
# over_seeds and the t table
# ---------------------------------------------------------------------------
def test_over_seeds_hand_computed():
    # Values 0, 1, 2: mean 1, sample var ((-1)² + 0² + 1²)/2 = 1, sd 1;
    # half-width t(0.975, 2)·sd/sqrt(3) = 4.3027/1.7321 = 2.4842.
    r = stats.over_seeds(lambda s: s, [0, 1, 2])
    assert r.mean == 1.0 and r.std == pytest.approx(1.0)
    assert (r.low, r.high) == pytest.approx((1 - 2.4842, 1 + 2.4842), abs=1e-4)
    assert r.values == [0.0, 1.0, 2.0] and r.seeds == [0, 1, 2] and r.n == 3


def test_over_seeds_keeps_seed_order_and_takes_tensors():
    r = stats.over_seeds(lambda s: torch.tensor(10.0 * s), [2, 0, 1])
    assert r.values == [20.0, 0.0, 10.0] and r.seeds == [2, 0, 1]


def test_over_seeds_one_seed_gives_no_interval():
    r = stats.over_seeds(lambda s: 0.5, [7])
    assert (r.mean, r.low, r.high, r.std) == (0.5, 0.5, 0.5, 0.0)
    assert "no interval" in str(r)


def test_over_seeds_dict_of_numbers():
    out = stats.over_seeds(lambda s: {"loss": s, "acc": 1 - s}, range(3))
    assert set(out) == {"loss", "acc"}
    assert out["loss"].mean == 1.0 and out["acc"].mean == 0.0
    assert out["acc"].std == pytest.approx(1.0) and out["acc"].values == [1.0, 0.0, -1.0]


def test_over_seeds_errors():
    with pytest.raises(LabkitError, match="empty"):
        stats.over_seeds(lambda s: s, [])
    with pytest.raises(LabkitError, match="list of seeds"):
        stats.over_seeds(lambda s: s, 3)
    with pytest.raises(LabkitError, match="keys"):
        stats.over_seeds(lambda s: {"a": 1} if s == 0 else {"b": 1}, [0, 1])
    with pytest.raises(LabkitError, match="diverged"):
        stats.over_seeds(lambda s: float("nan"), [0, 1])
    with pytest.raises(LabkitError, match="return a number"):
        stats.over_seeds(lambda s: "0.5", [0, 1])


def _t_cdf_above_zero(t, df, points=200_001):
    """P(0 < T < t) for Student's t, by integrating its density (trapezoid rule)."""
    x = np.linspace(0.0, t, points)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return float(np.trapezoid(np.exp(log_c) * (1 + x * x / df) ** (-(df + 1) / 2), x))


@pytest.mark.parametrize("df", list(range(1, 31)) + [31, 40, 100, 1000])
def test_t_critical_values_are_the_97_5_percentile(df):
    # t_{0.975, df} leaves 2.5% above it: P(0 < T < t) = 0.475. A typo in the
    # table (or a bad approximation beyond df = 30) moves this by more than 1e-4.
    assert _t_cdf_above_zero(stats.t_critical(df), df) == pytest.approx(0.475, abs=2e-5)


# ---------------------------------------------------------------------------
# The sentence
# ---------------------------------------------------------------------------
def test_contains_zero_and_describe_difference():
    assert stats.contains_zero(-0.01, 0.09) and stats.contains_zero(0.0, 0.1)  # endpoints count
    assert not stats.contains_zero(0.01, 0.09) and not stats.contains_zero(-0.09, -0.01)
    assert stats.describe_difference(-0.01, 0.09) == "no measurable difference"
    assert stats.describe_difference(0.01, 0.09) == "higher by 0.01 to 0.09"
    assert stats.describe_difference(-0.09, -0.01, unit="pp") == "lower by 0.01 to 0.09 pp"
    assert stats.describe_difference(-9, -1, unit="%") == "lower by 1 to 9%"
    seeds = stats.over_seeds(lambda s: 1 + 0.01 * s, [0, 1, 2])  # 1.01 ± 0.025: above zero
    assert stats.contains_zero(seeds) is False and stats.describe_difference(seeds).startswith("higher")
    with pytest.raises(LabkitError, match="low must not exceed high"):
        stats.contains_zero(0.2, 0.1)


@pytest.mark.parametrize("profile, n", [("smoke", 1), ("cpu", 3), ("full", 3)])
def test_default_seeds_follow_the_house_rule(profile, n):
    assert stats.default_seeds(profile) == list(range(n))
