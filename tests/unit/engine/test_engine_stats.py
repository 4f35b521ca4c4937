"""The engine's normal distribution helpers against SciPy (a test-only dependency)."""

import math

import numpy as np
import pytest
from scipy import special, stats

from finq_engine.stats import erfc, norm_cdf, norm_pdf, norm_ppf


def test_erfc_matches_scipy_everywhere() -> None:
    x = np.concatenate([np.linspace(-30, 30, 600_001), [0.0, -0.0, 0.46875, -0.46875, 4.0, -4.0]])
    np.testing.assert_allclose(erfc(x), special.erfc(x), rtol=0, atol=1e-15)


def test_erfc_is_relatively_accurate_in_the_tail() -> None:
    # The C library's erfc (correctly rounded to ~1 ulp) is the reference here: SciPy's own
    # erfc drifts to ~6e-14 relative around x = 11, more than Cody's approximation does.
    x = np.linspace(-3.0, 26.0, 20_001)
    reference = np.array([math.erfc(v) for v in x])
    np.testing.assert_allclose(erfc(x), reference, rtol=2e-15)


def test_norm_cdf_matches_scipy_to_1e_12() -> None:
    x = np.concatenate([np.linspace(-40, 40, 800_001), [np.inf, -np.inf]])
    np.testing.assert_allclose(norm_cdf(x), stats.norm.cdf(x), rtol=0, atol=1e-12)


def test_norm_cdf_relative_accuracy_in_the_lower_tail() -> None:
    # Far below the mean the absolute error is trivially small; the relative one matters for
    # deep out-of-the-money options.
    x = np.linspace(-37, -1, 100_001)
    np.testing.assert_allclose(norm_cdf(x), stats.norm.cdf(x), rtol=1e-12)


def test_norm_pdf_matches_scipy() -> None:
    x = np.linspace(-40, 40, 100_001)
    np.testing.assert_allclose(norm_pdf(x), stats.norm.pdf(x), rtol=1e-14, atol=1e-300)


def test_norm_ppf_matches_scipy_to_1e_12() -> None:
    p = np.concatenate(
        [
            np.linspace(1e-9, 1 - 1e-9, 500_001),
            np.logspace(-300, -1, 3_000),
            1 - np.logspace(-15, -1, 300),
        ]
    )
    np.testing.assert_allclose(norm_ppf(p), stats.norm.ppf(p), rtol=0, atol=1e-12)


def test_norm_ppf_edges() -> None:
    out = norm_ppf([0.0, 1.0, -0.1, 1.1, np.nan, 0.5])
    assert out[0] == -np.inf and out[1] == np.inf
    assert np.isnan(out[2:5]).all()
    assert out[5] == 0.0


def test_ppf_inverts_cdf() -> None:
    # Above ~5 the CDF is 1 - tiny and its rounding, not the inverse, limits the round trip.
    x = np.linspace(-30, 5, 10_001)
    np.testing.assert_allclose(norm_ppf(norm_cdf(x)), x, atol=1e-9)


@pytest.mark.parametrize("f", [erfc, norm_cdf, norm_pdf, norm_ppf])
def test_scalars_and_shapes_are_preserved(f: object) -> None:
    assert np.asarray(f(0.3)).shape == ()  # type: ignore[operator]
    assert f(np.zeros((2, 3))).shape == (2, 3)  # type: ignore[operator]
