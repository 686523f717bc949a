"""``service_types.between_points``: equally likely points read as the continuous law they
stand for (linear in the level between the points' levels (i + 1/2) / n), checked by hand,
and the TTFT's mixture quantile over them (``ttft.mixture_quantile_s``)."""

import numpy as np
import pytest

from optimizer.costs.serving.service_types import between_points
from optimizer.costs.serving.ttft import mixture_quantile_s


def test_between_points_by_hand():
    # 3 points at levels 1/6, 1/2, 5/6 read at 6 levels (j + 1/2) / 6 = 1/12, 3/12, ..., 11/12,
    # i.e. at positions (j + 1/2) / 2 - 1/2 = -1/4, 1/4, 3/4, 5/4, 7/4, 9/4 on the points' index:
    # linear between the points (slope 3 per index up to the 2nd, 6 after), the end segments
    # carried on beyond the end levels: -0.75, 0.75, 2.25, 4.5, 7.5, 10.5; mean 24.75 / 6 = 4.125,
    # the points' 4 plus what the kink at the middle one adds (a linear law keeps its mean)
    got = between_points(np.array([0.0, 3.0, 9.0]), 2)
    assert got == pytest.approx([-0.75, 0.75, 2.25, 3.0 + 0.25 * 6, 3.0 + 0.75 * 6, 3.0 + 1.25 * 6], abs=1e-12)
    assert got.mean() == pytest.approx(4.125, abs=1e-12)
    assert between_points(np.array([1.0, 2.0, 3.0]), 4).mean() == pytest.approx(2.0, abs=1e-12)
    # the first axis only (positions -1/4, 1/4, 3/4, 5/4 between two points); one point as it is
    both = between_points(np.array([[0.0, 10.0], [4.0, 30.0]]), 2)
    assert both[:, 0] == pytest.approx([-1.0, 1.0, 3.0, 5.0], abs=1e-12)
    assert both[:, 1] == pytest.approx([5.0, 15.0, 25.0, 35.0], abs=1e-12)
    assert between_points(np.array([5.0])) == pytest.approx([5.0])


def test_lognormal_quantile_between_points():
    # 32 equally likely points of a lognormal (the quantiles at (i + 1/2) / 32) and a function
    # linear in the length (own steps): the atoms put the 90th percentile on the 29th point
    # (level 28.5 / 32 = 0.8906), the continuous law between the 29th and the 30th; read at
    # 4 levels per point it is 1.8 % above the exact one (the fine level 0.9023 is past 0.9, and
    # the quantile function is convex there), the atoms 4.1 % below
    from statistics import NormalDist
    sigma, mu = 0.8, 8.6
    levels = (np.arange(32) + 0.5) / 32
    points = np.exp(mu + sigma * np.array([NormalDist().inv_cdf(u) for u in levels]))
    exact = np.exp(mu + sigma * NormalDist().inv_cdf(0.9))
    atoms = float(np.quantile(points, 0.9, method="inverted_cdf"))
    fine = float(np.quantile(between_points(points), 0.9, method="inverted_cdf"))
    assert atoms == points[28] < exact
    # the 116th of 128 levels (116 >= 0.9 x 128 = 115.2): 115.5 / 128 = 0.9023, i.e. 3/8 of the
    # way from the 29th point (level 0.8906) to the 30th (0.9219) ... position 115.5 / 4 - 1/2 = 28.375
    assert fine == pytest.approx(points[28] + 0.375 * (points[29] - points[28]), rel=1e-12)
    assert abs(fine / exact - 1.0) < abs(atoms / exact - 1.0) / 2


def test_mixture_quantile_over_points_between_them():
    # no wait: the mixture's 90th percentile is the own steps' own quantile, over the atoms
    # the 29th of 32 equally spaced own steps 0, 1, ..., 31 s (28 s), between them 28.375 s
    owns = np.arange(32, dtype=float)
    def no_wait(u):
        return np.zeros(np.shape(u))
    atoms = mixture_quantile_s(owns, np.full(32, 1 / 32), no_wait, 0.0, 0.9)
    fine = between_points(owns)
    between = mixture_quantile_s(fine, np.full(len(fine), 1 / len(fine)), no_wait, 0.0, 0.9)
    assert atoms == pytest.approx(28.0, rel=1e-5)
    assert between == pytest.approx(28.375, rel=1e-5)
