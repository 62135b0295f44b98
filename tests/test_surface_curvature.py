"""landscape.surface_curvature: 2x2 Hessians of a surface grid against analytic surfaces."""

import numpy as np
import pytest

from genviz_jax import landscape


def _grid(f, xs, ys):
  xx, yy = np.meshgrid(xs, ys, indexing="ij")
  return f(xx, yy)


AXIS = np.linspace(-1, 1, 21)


def test_bowl_has_no_negative_curvature():
  out = landscape.surface_curvature(AXIS, AXIS, _grid(lambda x, y: x ** 2 + y ** 2, AXIS, AXIS))
  assert out["negative_share"] == 0.0 and out["num_points"] == 19 * 19
  np.testing.assert_allclose(out["mean_abs_ratio"], 1.0, rtol=1e-9)  # λ = 2, 2
  assert out["ratio_points"] == 19 * 19


def test_saddle_is_negative_everywhere_with_ratio_one():
  ys = np.linspace(-2, 3, 31)  # a different, non-square axis
  out = landscape.surface_curvature(AXIS, ys, _grid(lambda x, y: x ** 2 - y ** 2, AXIS, ys))
  assert out["negative_share"] == 1.0 and out["num_points"] == 19 * 29
  np.testing.assert_allclose(out["mean_abs_ratio"], 1.0, rtol=1e-9)


def test_anisotropic_bowl_ratio_and_rotation_invariance():
  out = landscape.surface_curvature(AXIS, AXIS, _grid(lambda x, y: x ** 2 + 0.25 * y ** 2,
                                                      AXIS, AXIS))
  assert out["negative_share"] == 0.0
  np.testing.assert_allclose(out["mean_abs_ratio"], 0.25, rtol=1e-9)
  # The same bowl rotated by 30 degrees: f_xy ≠ 0, same eigenvalues.
  c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
  rot = lambda x, y: (c * x + s * y) ** 2 + 0.25 * (-s * x + c * y) ** 2
  out = landscape.surface_curvature(AXIS, AXIS, _grid(rot, AXIS, AXIS))
  np.testing.assert_allclose(out["mean_abs_ratio"], 0.25, rtol=1e-9)
  # A rotated saddle x'^2 - 3 y'^2: negative everywhere, ratio 3.
  out = landscape.surface_curvature(AXIS, AXIS, _grid(
      lambda x, y: (c * x + s * y) ** 2 - 3 * (-s * x + c * y) ** 2, AXIS, AXIS))
  assert out["negative_share"] == 1.0
  np.testing.assert_allclose(out["mean_abs_ratio"], 3.0, rtol=1e-9)


@pytest.mark.parametrize("nx", [41, 64, 101])
def test_cosine_negative_region_share_within_one_grid_step(nx):
  xs = np.linspace(-np.pi, np.pi, nx)
  ys = np.linspace(0, 1, 9)
  out = landscape.surface_curvature(xs, ys, _grid(lambda x, y: np.cos(x) + 0 * y, xs, ys))
  # f_xx = −cos x < 0 exactly where |x| < π/2, an interval of length π holding π/h ± 1 of the
  # nx − 2 interior columns: the share is π / (h (nx − 2)) within one column's share.
  h = xs[1] - xs[0]
  expected = np.pi / (h * (nx - 2))
  step = 1.0 / (nx - 2)
  assert abs(out["negative_share"] - expected) <= step + 1e-12
  # Where |x| > π/2, λ_max = −cos x > 0 and λ_min = 0 (flat in y): ratio 0; elsewhere undefined.
  assert out["ratio_points"] > 0 and out["mean_abs_ratio"] < 1e-6


def test_float32_rounding_is_not_counted_as_curvature():
  xs = np.linspace(-0.05, 0.05, 41)  # fine grid: rounding noise / h² is large
  g = _grid(lambda x, y: 2.0 + x ** 2 + y ** 2, xs, xs).astype(np.float32)
  out = landscape.surface_curvature(xs, xs, g)
  assert out["negative_share"] == 0.0


@pytest.mark.parametrize("xs,ys,grid,match", [
    (np.array([0.0, 0.1, 0.3, 0.4]), AXIS, np.zeros((4, 21)), r"xs spacing ranges over"),
    (AXIS, np.array([1.0, 1.0, 1.0]), np.zeros((21, 3)), r"ys spacing .* uniform nonzero"),
    (np.array([0.0, 1.0]), AXIS, np.zeros((2, 21)), r"xs has shape \(2,\); need a 1-D axis of >= 3"),
    (AXIS, AXIS, np.zeros((21, 20)), r"grid has shape \(21, 20\); need .* \(21, 21\)"),
    (AXIS, AXIS, np.full((21, 21), np.nan), r"grid contains a non-finite value"),
    (np.array([0.0, np.inf, 2.0]), AXIS, np.zeros((3, 21)), r"xs contains a non-finite"),
])
def test_rejects_bad_input(xs, ys, grid, match):
  with pytest.raises(ValueError, match=match):
    landscape.surface_curvature(xs, ys, grid)
  with pytest.raises(ValueError, match=r"rtol=0 must be a number in \(0, 1\)"):
    landscape.surface_curvature(AXIS, AXIS, np.zeros((21, 21)), rtol=0)
