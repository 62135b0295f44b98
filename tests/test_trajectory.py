"""Trajectory PCA (Li et al. 2018 §7): exact planes, known spectra, contours by hand, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import trajectory


def _split(vecs, shapes):
  """Rows (T, P) -> {"a": (T, *shapes[0]), "b": {"c": (T, *shapes[1])}} (a nested pytree)."""
  n0 = int(np.prod(shapes[0]))
  t = vecs.shape[0]
  return {"a": vecs[:, :n0].reshape(t, *shapes[0]), "b": {"c": vecs[:, n0:].reshape(t, *shapes[1])}}


def _flat(tree):
  leaves = jax.tree.leaves(tree)
  lead = np.shape(leaves[0])[0]
  return np.concatenate([np.asarray(x, np.float64).reshape(lead, -1) for x in leaves], axis=1)


SHAPES = [(3, 4), (5,)]  # P = 17


def _final(rng):
  return {"a": rng.randn(3, 4), "b": {"c": rng.randn(5)}}


def _rows_of(final):
  return np.concatenate([np.ravel(final["a"]), np.ravel(final["b"]["c"])])


def test_planar_path_is_explained_fully_and_distances_survive():
  rng = np.random.RandomState(0)
  final = _final(rng)
  u, v = rng.randn(17), rng.randn(17)  # generic, not orthonormal
  t = 40
  a = np.cumsum(rng.randn(t)) + 3.0
  b = np.sin(np.linspace(0, 3, t)) * 2.0 + 0.3 * rng.randn(t)
  path = _rows_of(final)[None] + a[:, None] * u + b[:, None] * v
  plane = trajectory.pca_plane(_split(path, SHAPES), final)

  assert plane.coords.shape == (t, 2) and plane.explained_variance.shape == (2,)
  np.testing.assert_allclose(plane.explained_variance.sum(), 1.0, atol=1e-6)
  assert plane.explained_variance[0] >= plane.explained_variance[1] > 0
  basis = _flat(plane.basis)
  assert jax.tree.map(np.shape, plane.basis) == {"a": (2, 3, 4), "b": {"c": (2, 5)}}
  np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-10)
  # Points in the plane: pairwise distances (and distances to θ_f) are the original ones.
  diffs = path - _rows_of(final)[None]
  orig = np.concatenate([diffs, np.zeros((1, 17))])
  proj = np.concatenate([plane.coords, np.zeros((1, 2))])
  dist = lambda z: np.linalg.norm(z[:, None] - z[None], axis=-1)
  np.testing.assert_allclose(dist(proj), dist(orig), rtol=1e-8, atol=1e-8)
  # ... and the plane reproduces the path itself.
  np.testing.assert_allclose(plane.coords @ basis, diffs, atol=1e-8)


def test_explained_variance_matches_the_covariance_spectrum_and_sklearn():
  rng = np.random.RandomState(1)
  final = _final(rng)
  q, _ = np.linalg.qr(rng.randn(17, 3))  # a 3-D subspace
  t = 200
  z = rng.randn(t, 3) * np.array([5.0, 2.0, 1.0]) + np.array([4.0, -1.0, 0.5])  # off-centre
  rows = z @ q.T
  plane = trajectory.pca_plane(_split(_rows_of(final)[None] + rows, SHAPES), final)

  cov = np.cov(rows, rowvar=False)  # P x P; centred, as Li et al.'s sklearn PCA
  eig = np.linalg.eigvalsh(cov)[::-1]
  np.testing.assert_allclose(plane.explained_variance, eig[:2] / eig.sum(), rtol=1e-9)
  assert plane.explained_variance.sum() < 1.0

  pca = pytest.importorskip("sklearn.decomposition").PCA(n_components=2).fit(rows)
  np.testing.assert_allclose(plane.explained_variance, pca.explained_variance_ratio_, rtol=1e-9)
  basis = _flat(plane.basis)
  np.testing.assert_allclose(np.abs(np.sum(basis * pca.components_, axis=1)), 1.0, atol=1e-9)
  # Coordinates project the uncentred rows θ_i − θ_f (Li et al. project_trajectory, "cos").
  np.testing.assert_allclose(plane.coords, rows @ basis.T, atol=1e-9)
  # Sign convention: the largest-magnitude coordinate along each direction is positive.
  assert np.all(plane.coords[np.argmax(np.abs(plane.coords), axis=0), [0, 1]] > 0)


def test_float32_leaves_give_a_float32_basis_and_jax_inputs_work():
  rng = np.random.RandomState(2)
  final = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _final(rng))
  rows = rng.randn(6, 17)
  it = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _split(rows, SHAPES))
  plane = trajectory.pca_plane(it, final)
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(plane.basis))
  basis = _flat(plane.basis)
  np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-6)


def _quadratic():
  h = np.diag([1.0, 4.0, 0.5])

  def loss_fn(params, batch):
    z = params["w"] - batch["shift"][0]
    return {"loss": 0.5 * z @ jnp.asarray(h, jnp.float32) @ z, "zsum": jnp.sum(z)}

  return h, loss_fn


def test_contour_matches_direct_evaluation():
  h, loss_fn = _quadratic()
  rng = np.random.RandomState(3)
  final = {"w": jnp.asarray([0.2, -0.1, 0.3], jnp.float32)}
  rows = rng.randn(12, 3) * np.array([2.0, 1.0, 0.1])
  it = {"w": np.asarray(final["w"])[None] + rows}
  plane = trajectory.pca_plane(it, final)
  data = {"shift": jnp.asarray(np.tile([[0.1, 0.0, -0.2]], (4, 1)), jnp.float32)}
  xs, ys, grids = trajectory.contour(loss_fn, final, plane, num=7, margin=0.2, data=data,
                                     point_batch=4)
  assert xs.shape == (7,) and ys.shape == (7,) and set(grids) == {"loss", "zsum"}
  assert grids["loss"].shape == (7, 7)
  # The axes cover the path and θ_f with a 20% margin.
  for ax, c in ((xs, plane.coords[:, 0]), (ys, plane.coords[:, 1])):
    lo, hi = min(c.min(), 0), max(c.max(), 0)
    np.testing.assert_allclose([ax[0], ax[-1]], [lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo)])
  v1, v2 = (np.asarray(plane.basis["w"][k], np.float64) for k in (0, 1))
  for i, j in [(0, 0), (3, 5), (6, 2), (6, 6)]:
    w = np.asarray(final["w"], np.float64) + xs[i] * v1 + ys[j] * v2
    z = w - np.array([0.1, 0.0, -0.2])
    np.testing.assert_allclose(grids["loss"][i, j], 0.5 * z @ h @ z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grids["zsum"][i, j], z.sum(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case,match", [
    ("one_point", r"T=1 points; need T >= 2"),
    ("unlike_tree", r"iterates tree differs from params"),
    ("unlike_shape", r"iterates leaf .* has shape"),
    ("ragged", r"different leading sizes"),
    ("nan_iterate", r"iterates leaf .* non-finite"),
    ("inf_final", r"final leaf .* non-finite"),
    ("static", r"all the same point"),
    ("collinear", r"lie on a line"),
])
def test_pca_plane_rejects_bad_input(case, match):
  rng = np.random.RandomState(4)
  final = _final(rng)
  it = _split(rng.randn(5, 17), SHAPES)
  if case == "one_point":
    it = jax.tree.map(lambda x: x[:1], it)
  elif case == "unlike_tree":
    it = {"a": it["a"], "d": it["b"]}
  elif case == "unlike_shape":
    it["a"] = np.zeros((5, 4, 3))
  elif case == "ragged":
    it["a"] = it["a"][:4]
  elif case == "nan_iterate":
    it["b"]["c"][2, 1] = np.nan
  elif case == "inf_final":
    final["a"][0, 0] = np.inf
  elif case == "static":
    it = jax.tree.map(lambda f: np.repeat(np.asarray(f)[None], 5, 0), final)
  elif case == "collinear":
    d = rng.randn(17)
    it = _split(_rows_of(final)[None] + np.linspace(0, 3, 5)[:, None] * d, SHAPES)
  with pytest.raises(ValueError, match=match):
    trajectory.pca_plane(it, final)


def test_contour_rejects_bad_input():
  _, loss_fn = _quadratic()
  final = {"w": np.zeros(3, np.float32)}
  plane = trajectory.pca_plane({"w": np.random.RandomState(5).randn(4, 3)}, final)
  with pytest.raises(ValueError, match=r"num=1 must be an integer >= 2"):
    trajectory.contour(loss_fn, final, plane, num=1)
  with pytest.raises(ValueError, match=r"margin=-0.1 must be a finite number >= 0"):
    trajectory.contour(loss_fn, final, plane, margin=-0.1)
  with pytest.raises(ValueError, match=r"plane is a dict; need a PCAPlane"):
    trajectory.contour(loss_fn, final, {"basis": plane.basis})
  with pytest.raises(ValueError, match=r"plane.basis tree differs"):
    trajectory.contour(loss_fn, {"v": final["w"]}, plane)
