"""Datasets: construction facts checked against their definitions, TFDS via mock_data."""

import os
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import data

TURN = 600 * 2 * np.pi / 360  # 600 degrees in radians, ~10.47


# ---------------------------------------------------------------- swiss roll

def _spiral_residual(x, y):
  """Distance of noise-free points from the arm their label says (class 1 = negated class 0)."""
  p = np.where(y[:, None] == 0, x, -x)
  n = np.linalg.norm(p, axis=1) / 1.5  # |(-1.5 n cos n, 1.5 n sin n)| = 1.5 n
  return np.abs(p - np.stack([-1.5 * n * np.cos(n), 1.5 * n * np.sin(n)], -1)).max(), n


def test_swiss_roll_is_deterministic_by_seed():
  a, b, c = data.swiss_roll(seed=1237), data.swiss_roll(seed=1237), data.swiss_roll(seed=7)
  for split in ("train", "test", "poison"):
    np.testing.assert_array_equal(getattr(a, split)["x"], getattr(b, split)["x"])
    np.testing.assert_array_equal(getattr(a, split)["y"], getattr(b, split)["y"])
  assert not np.array_equal(a.train["x"], c.train["x"])


def test_swiss_roll_shapes_balance_and_radii():
  ds = data.swiss_roll()
  assert ds.num_classes == 2 and ds.input_shape == (2,)
  for split, n in (("train", 200), ("test", 200), ("poison", 200)):
    b = getattr(ds, split)
    assert b["x"].shape == (n, 2) and b["x"].dtype == np.float32
    assert b["y"].shape == (n,) and b["y"].dtype == np.int32
  # 400 points are drawn half per class, then shuffled into train/test.
  all_y = np.concatenate([ds.train["y"], ds.test["y"]])
  assert np.bincount(all_y).tolist() == [200, 200]
  assert np.bincount(ds.poison["y"]).tolist() == [100, 100]
  assert 70 < np.bincount(ds.train["y"])[0] < 130
  # |x| <= 1.5 * 10.47 + |noise|; noise is 2-D Gaussian with σ = 0.5 (5σ is never reached here).
  r = np.linalg.norm(np.concatenate([ds.train["x"], ds.test["x"]]), axis=1)
  assert r.max() <= 1.5 * TURN + 5 * 0.5
  assert r.max() > 1.5 * TURN - 2  # the spiral reaches its full 600 degrees


def test_swiss_roll_without_noise_lies_on_the_spirals():
  ds = data.swiss_roll(noise=0.0)
  x = np.concatenate([ds.train["x"], ds.test["x"], ds.poison["x"]])
  y = np.concatenate([ds.train["y"], ds.test["y"], ds.poison["y"]])
  resid, n = _spiral_residual(x.astype(np.float64), y)
  assert resid < 1e-4
  assert n.min() >= 0 and n.max() <= TURN + 1e-5
  # n = sqrt(u)·TURN with u uniform: n² / TURN² is uniform, mean 1/2.
  assert abs(np.mean((n / TURN) ** 2) - 0.5) < 0.05


def test_swiss_roll_poison_sampler_is_jittable_and_fresh():
  ds = data.swiss_roll(num_poison=64, noise=0.0)
  sample = jax.jit(ds.poison_sampler)
  k1, k2 = jax.random.split(jax.random.key(0))
  a, a2, b = sample(k1), sample(k1), sample(k2)
  assert a["x"].shape == (64, 2) and a["x"].dtype == jnp.float32 and a["y"].dtype == jnp.int32
  np.testing.assert_array_equal(a["x"], a2["x"])
  assert not np.allclose(a["x"], b["x"])
  assert np.bincount(np.asarray(a["y"])).tolist() == [32, 32]
  resid, _ = _spiral_residual(np.asarray(a["x"], np.float64), np.asarray(a["y"]))
  assert resid < 1e-4  # true labels: each point on its own class's arm


@pytest.mark.parametrize("kwargs", [{"num_train": 0}, {"num_poison": -3}, {"noise": -1.0},
                                    {"noise": float("nan")}])
def test_swiss_roll_rejects_bad_sizes(kwargs):
  with pytest.raises(ValueError, match=list(kwargs)[0]):
    data.swiss_roll(**kwargs)


# ---------------------------------------------------------------- circles (Fig. 8)

def _polar(x):
  r = np.linalg.norm(x, axis=1)
  t = np.mod(np.arctan2(x[:, 0], x[:, 1]), 2 * np.pi)  # the (r sin t, r cos t) convention
  return r, t


def test_circles_construction():
  ds = data.circles(margin=0.001)
  x, y = ds.train["x"], ds.train["y"]
  assert x.shape == (130, 2) and x.dtype == np.float32 and y.dtype == np.int32
  r, t = _polar(x.astype(np.float64))
  np.testing.assert_allclose(r[y == 0], 0.4, atol=1e-6)
  assert np.sum(y == 0) == 40
  r1 = np.sort(r[y == 1])
  np.testing.assert_allclose(r1[:10], 0.401, atol=1e-6)
  np.testing.assert_allclose(r1[10:], 0.95, atol=1e-6)
  # Interleaved: walking around the inner ring, no two gap points are neighbours and every gap
  # point sits half-way between two class-0 points.
  inner = r < 0.7
  order = np.argsort(t[inner])
  labels = y[inner][order]
  assert not np.any(labels & np.roll(labels, 1))
  gaps = np.flatnonzero(labels)
  assert np.all(np.diff(gaps) == 5)  # 40 class-0 and 10 gap points: 4 class-0 between gaps
  t0 = np.sort(t[y == 0])
  for tg in t[(y == 1) & (r < 0.7)]:
    gap = np.min(np.abs(np.angle(np.exp(1j * (t0 - tg)))))
    np.testing.assert_allclose(gap, np.pi / 40, atol=1e-6)


def test_circles_test_set_is_rotated_copy_and_margin_is_configurable():
  ds = data.circles(seed=3)
  r_tr, t_tr = _polar(ds.train["x"].astype(np.float64))
  r_te, t_te = _polar(ds.test["x"].astype(np.float64))
  np.testing.assert_allclose(np.sort(r_te), np.sort(r_tr), atol=1e-6)
  np.testing.assert_array_equal(ds.test["y"], ds.train["y"])
  # New angles: no test point coincides with a train point.
  d = np.linalg.norm(ds.test["x"][:, None] - ds.train["x"][None], axis=-1)
  assert d.min() > 1e-3
  assert data.circles(seed=3).metadata == ds.metadata
  assert data.circles(seed=4).metadata["test_rotation"] != ds.metadata["test_rotation"]
  wide = data.circles(margin=0.3)
  r, _ = _polar(wide.train["x"].astype(np.float64))
  np.testing.assert_allclose(np.sort(r[wide.train["y"] == 1])[:10], 0.7, atol=1e-6)


@pytest.mark.parametrize("margin", [0.0, -0.1, 0.6, float("nan")])
def test_circles_rejects_bad_margin(margin):
  with pytest.raises(ValueError, match="margin"):
    data.circles(margin=margin)


# ---------------------------------------------------------------- digits

def test_digits_split_and_normalization():
  from sklearn.datasets import load_digits
  raw = load_digits()
  ds = data.digits(seed=5, num_train=1000, num_poison=200)
  assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
  assert ds.train["x"].dtype == np.float32 and ds.train["y"].dtype == np.int32
  assert (len(ds.train["y"]), len(ds.poison["y"]), len(ds.test["y"])) == (1000, 200, 597)
  # Independent recomputation: the documented permutation and the train statistics.
  perm = np.random.RandomState(5).permutation(1797)
  tr, po, te = perm[:1000], perm[1000:1200], perm[1200:]
  mean, std = raw.images[tr].mean(), raw.images[tr].std()
  for split, idx in (("train", tr), ("poison", po), ("test", te)):
    b = getattr(ds, split)
    np.testing.assert_array_equal(b["y"], raw.target[idx])  # poison keeps its TRUE labels
    np.testing.assert_allclose(b["x"][..., 0], (raw.images[idx] - mean) / std, atol=1e-5)
  assert abs(ds.train["x"].mean()) < 1e-5 and abs(ds.train["x"].std() - 1) < 1e-5
  np.testing.assert_array_equal(data.digits(seed=5, num_train=1000, num_poison=200).test["x"],
                                ds.test["x"])
  assert ds.poison_sampler is None


@pytest.mark.parametrize("kwargs,match", [({"num_train": 0}, "num_train"),
                                          ({"num_train": 1797}, "no test data"),
                                          ({"num_train": 1000, "num_test": 900}, "exceeds"),
                                          ({"num_poison": -1}, "num_poison")])
def test_digits_rejects_bad_sizes(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.digits(**kwargs)


# ---------------------------------------------------------------- registry

def test_get_dataset_registry_and_errors():
  assert data.get_dataset("circles", margin=0.3).metadata["margin"] == 0.3
  assert set(data.DATASETS) == {"swissroll", "circles", "digits", "mnist", "fashion_mnist",
                                "cifar10", "svhn_cropped"}
  with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; allowed: .*cifar10"):
    data.get_dataset("imagenet")
  with pytest.raises(ValueError, match=r"unknown option\(s\) radius .*allowed: .*margin"):
    data.get_dataset("circles", radius=2)
  assert data.get_dataset("swissroll", data_dir=None).name == "swissroll"
  with pytest.raises(ValueError, match=r"unknown option\(s\) data_dir for dataset 'digits'"):
    data.get_dataset("digits", data_dir="/some/where")


# ---------------------------------------------------------------- TFDS (real code path, mocked)

tfds = pytest.importorskip("tensorflow_datasets")


def _mocked(num_examples=24):
  return tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE)


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3))])
def test_tfds_loader_shapes_and_per_channel_normalization(tmp_path, name, shape):
  with _mocked():
    ds = data.get_dataset(name, data_dir=str(tmp_path))
  assert ds.input_shape == shape and ds.num_classes == 10
  for b in (ds.train, ds.test):
    assert b["x"].dtype == np.float32 and b["y"].dtype == np.int32
    assert b["y"].min() >= 0 and b["y"].max() < 10
  c = shape[-1]
  flat = ds.train["x"].reshape(-1, c).astype(np.float64)
  np.testing.assert_allclose(flat.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(flat.std(0), 1, atol=1e-4)
  # The stored statistics undo the normalization back to uint8 pixel values.
  pix = ds.train["x"] * np.array(ds.metadata["channel_std"]) + np.array(ds.metadata["channel_mean"])
  np.testing.assert_allclose(pix, np.round(pix), atol=1e-3)
  assert pix.min() >= -1e-3 and pix.max() <= 255 + 1e-3
  assert ds.poison is None


def test_tfds_svhn_extra_is_the_poison_set(tmp_path):
  real = tfds.data_source
  with _mocked(), mock.patch.object(tfds, "data_source", wraps=real) as spy:
    ds = data.get_dataset("svhn_cropped", data_dir=str(tmp_path), num_poison=10, num_train=20)
  assert "extra" in spy.call_args.kwargs["split"]
  assert ds.metadata["poison_split"] == "extra"
  assert ds.poison["x"].shape == (10, 32, 32, 3) and ds.poison["y"].dtype == np.int32
  assert ds.train["x"].shape == (20, 32, 32, 3)
  # The poison set is normalized with the TRAIN statistics, not its own.
  std, mean = np.array(ds.metadata["channel_std"]), np.array(ds.metadata["channel_mean"])
  pix = ds.poison["x"] * std + mean
  np.testing.assert_allclose(pix, np.round(pix), atol=1e-3)


def test_tfds_poison_carved_from_train_and_size_limits(tmp_path):
  with _mocked(24):
    ds = data.get_dataset("mnist", data_dir=str(tmp_path), num_poison=6)
    assert (len(ds.train["y"]), len(ds.poison["y"])) == (18, 6)
    with pytest.raises(ValueError, match="num_poison=24 must be smaller"):
      data.get_dataset("mnist", data_dir=str(tmp_path), num_poison=24)
  with pytest.raises(ValueError, match="max_poison=100000"):
    data.get_dataset("svhn_cropped", data_dir=str(tmp_path), num_poison=531_131)


def test_tfds_missing_or_foreign_data_dir_says_how_to_prepare(tmp_path):
  hint = r"python -m experiments\.prepare_data --dataset=cifar10 --data_dir=DIR"
  with pytest.raises(ValueError, match="needs data_dir.*" + hint):
    data.get_dataset("cifar10")
  with pytest.raises(ValueError, match="does not exist.*" + hint):
    data.get_dataset("cifar10", data_dir=str(tmp_path / "nope"))
  a_file = tmp_path / "file.txt"
  a_file.write_text("keep me")
  with pytest.raises(ValueError, match="not a directory"):
    data.get_dataset("cifar10", data_dir=str(a_file))
  # A directory that holds something else (no mock: the real tfds reader is asked).
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(ValueError, match="not prepared.*" + hint) as e:
    data.get_dataset("cifar10", data_dir=str(foreign))
  assert "\n" not in str(e.value)
  assert os.listdir(foreign) == ["notes.txt"] and a_file.read_text() == "keep me"


# ---------------------------------------------------------------- minibatches

def test_minibatch_indices_epochs_are_permutations_and_jittable():
  n, bs, seed = 23, 5, 11
  spe = n // bs  # 4 steps per epoch, 3 examples dropped
  f = jax.jit(data.minibatch_indices, static_argnums=(0, 1))
  batches = [np.asarray(f(n, bs, seed, s)) for s in range(3 * spe)]
  assert all(b.shape == (bs,) and b.dtype == np.int32 for b in batches)
  for e in range(3):
    epoch = np.concatenate(batches[e * spe:(e + 1) * spe])
    assert len(set(epoch.tolist())) == spe * bs and epoch.min() >= 0 and epoch.max() < n
    # The documented construction: permutation of fold_in(key(seed), epoch), in order.
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(seed), e), n))
    np.testing.assert_array_equal(epoch, perm[:spe * bs])
  assert not np.array_equal(batches[0], batches[spe])  # reshuffled each epoch
  # Eager and jitted agree; traced seed/step inside a scan give the same batches (resume at
  # any step needs nothing but the step number).
  np.testing.assert_array_equal(data.minibatch_indices(n, bs, seed, 6), batches[6])
  _, scanned = jax.lax.scan(lambda c, s: (c, data.minibatch_indices(n, bs, seed, s)), 0,
                            jnp.arange(3 * spe))
  np.testing.assert_array_equal(scanned, np.stack(batches))
  assert not np.array_equal(f(n, bs, seed + 1, 0), batches[0])
  assert f(n, bs, -1, 0).shape == (bs,)  # any int seed, as jax.random.key takes it


@pytest.mark.parametrize("n,bs,match", [(10, 11, "exceeds"), (10, 0, "batch_size"),
                                        (0, 1, "num_examples")])
def test_minibatch_indices_rejects_bad_sizes(n, bs, match):
  with pytest.raises(ValueError, match=match):
    data.minibatch_indices(n, bs, 0, 0)


def test_prepare_data_rejects_bad_arguments_before_touching_anything(tmp_path):
  from experiments import prepare_data
  with pytest.raises(ValueError, match=r"--dataset='cifar100' .*allowed: cifar10, fashion_mnist"):
    prepare_data.prepare("cifar100", str(tmp_path))
  a_file = tmp_path / "f"
  a_file.write_text("keep me")
  with pytest.raises(ValueError, match="not a directory"):
    prepare_data.prepare("mnist", str(a_file))
  with pytest.raises(ValueError, match="--data_dir is required"):
    prepare_data.prepare("mnist", "")
  assert a_file.read_text() == "keep me"
