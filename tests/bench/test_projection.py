"""The sizing projection: a power law fitted over the measured catalog sizes, and cores for the night."""

from __future__ import annotations

import pytest

from pipeline.bench.nightly import fit_growth, projection, projection_from_reports


def test_points_on_a_power_law_give_back_its_exponent_and_scale() -> None:
    points = [(n, 2.0 * n**0.25) for n in (100_000, 1_000_000, 4_000_000)]
    exponent, scale = fit_growth(points)
    assert exponent == pytest.approx(0.25) and scale == pytest.approx(2.0)


def test_ten_ms_per_user_is_35_cores_for_50m_users_in_4_hours() -> None:
    flat = projection([(100_000, 10.0), (1_000_000, 10.0)])  # 50M × 10 ms / 14,400 s = 34.7 cores
    assert flat["cores_50M_users_4h"] == 35 and flat["cores_50M_users_4h_at_60M_tracks"] == 35
    assert flat["growth_exponent"] == pytest.approx(0.0, abs=1e-12)


def test_the_60m_projection_scales_the_largest_measurement_by_the_fitted_exponent() -> None:
    result = projection([(1_000_000, 20.0), (100_000, 10.0)])  # doubles per tenfold: exponent log10(2)
    assert result["measured_tracks"] == [100_000, 1_000_000]
    assert result["ms_per_user_at_60M_tracks"] == pytest.approx(20.0 * 60 ** 0.30103, rel=1e-4)


def test_one_catalog_size_cannot_be_fitted() -> None:
    with pytest.raises(ValueError, match="at least two catalog sizes"):
        fit_growth([(1_000_000, 10.0), (1_000_000, 12.0)])


def test_reports_of_several_runs_pool_their_sizes_and_a_shared_size_keeps_the_bigger_pass() -> None:
    def report(small: int, big: int, small_ms: float, big_ms: float, growth_users: int, users: int) -> dict:
        return {"projection": {"measured_tracks": [small, big], "measured_ms_per_user": [small_ms, big_ms]},
                "config": {"growth_users": growth_users, "users": users, "backend": "faiss"}}

    pooled = projection_from_reports([report(20_000, 200_000, 5.0, 8.0, 300, 2000),
                                      report(100_000, 1_000_000, 7.0, 9.0, 300, 1000),
                                      report(10_000, 100_000, 1.0, 6.0, 100, 1000)])
    assert pooled["measured_tracks"] == [10_000, 20_000, 100_000, 200_000, 1_000_000]
    assert pooled["measured_ms_per_user"] == [1.0, 5.0, 6.0, 8.0, 9.0]  # 100k: the 1,000-user pass, not the 300


def test_reports_of_two_backends_are_not_pooled() -> None:
    def report(backend: str) -> dict:
        return {"projection": {"measured_tracks": [1, 10], "measured_ms_per_user": [1.0, 2.0]},
                "config": {"growth_users": 1, "users": 4, "backend": backend}}

    with pytest.raises(ValueError, match="several ANN backends"):
        projection_from_reports([report("annoy"), report("faiss")])
