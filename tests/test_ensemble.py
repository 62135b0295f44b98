"""Many runs at once: evaluation through the engine against per-run float64 references."""

import jax
import numpy as np
import pytest

from genviz_jax import data
from genviz_jax import ensemble
from genviz_jax import models


@pytest.fixture(scope="module")
def setup():
  model = models.MLP((8, 8), 3)
  return model, ensemble.init_many(model, [0, 1, 2], (2,))


def test_evaluate_many_is_each_runs_own_loss_and_accuracy(setup):
  model, stacked = setup
  ds = data.swiss_roll(num_train=30, num_test=10, num_poison=2)
  split = {"x": ds.train["x"], "y": ds.train["y"] % 3}
  got = ensemble.evaluate_many(model, stacked, split, point_batch=2, data_batch=7)
  for r in range(3):
    logits = np.asarray(model.apply({"params": jax.tree.map(lambda a: a[r], stacked)},
                                    split["x"]), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(got["loss"][r], -np.mean(logp[np.arange(30), split["y"]]),
                               rtol=1e-5)
    assert got["accuracy"][r] == pytest.approx(np.mean(logits.argmax(-1) == split["y"]),
                                               abs=1e-6)
