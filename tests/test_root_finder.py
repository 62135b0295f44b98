"""Basin radii by interpolation (method="chandrupatla") against bisection and independent roots.

  quadratic     L = ½|w|²: along d the radius is √(2τ)/||d|| (closed form); both methods agree
                with it to 1e-4 at rtol 1e-4, the interpolation in a third of the evaluations
  1-D rays      a steep sigmoid, flat-then-steep, NaN beyond a radius, a crossing before a dip, an
                accuracy-like step below a threshold: roots in closed form; both methods return
                an evaluated crossed radius in [r*, r*/(1 - rtol)] of the crossing inside the
                first bracket (the bracketing is shared, so it is the same crossing)
  trained MLP   a swiss-roll MLP trained here for 200 steps: 256 filter-normalized directions,
                radii within rtol of bisection's, in under 0.6x its evaluations
  devices       1 vs 4 simulated CPU devices (a subprocess): bit-identical radii
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import basin
from genviz_jax.basin import bisection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-4
# r* <= radius <= r*/(1 - rtol) (hi - lo <= rtol·hi with lo < r* <= hi), plus float32 rounding.
UPPER = RTOL / (1 - RTOL) + 1e-6


def _both(f, num, tau, centre, crossing="above", r_init=0.125, r_max=64.0):
  """Both root finders on metric_at(r) = f(r) (num directions), called directly (no engine)."""
  crossed = (lambda v: ~(v <= tau)) if crossing == "above" else (lambda v: ~(v >= tau))
  kw = dict(is_crossed=crossed, r_init=r_init, r_max=r_max, rtol=RTOL, max_iter=80)
  new = bisection.bracket_and_interpolate(
      f, num, score=lambda v: bisection.log_score(v, tau, centre), **kw)
  old = bisection.bracket_and_bisect(f, num, **kw)
  return ({k: np.asarray(v) for k, v in new.items()}, {k: np.asarray(v) for k, v in old.items()})


def test_quadratic_radius_is_the_closed_form_in_a_third_of_the_evaluations():
  rng = np.random.default_rng(0)
  k, n, tau = 64, 6, 0.7
  u = rng.normal(size=(k, n)) * np.exp(rng.uniform(-2, 2, size=(k, 1)))  # ||d|| over e^±2
  params = {"w": jnp.zeros(n)}
  d = {"w": jnp.asarray(u, jnp.float32)}
  f = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
  res = {m: basin.radii(f, params, d, threshold=tau, rtol=RTOL, method=m, chunk_size=32)
         for m in ("chandrupatla", "bisection")}
  exact = np.sqrt(2 * tau) / np.linalg.norm(u, axis=1)
  for r in res.values():
    rel = r.radius / exact - 1
    assert np.all(rel >= -1e-6) and np.all(rel <= UPPER)
    assert np.max(np.abs(rel)) <= 1e-4  # the agreement with the analytic quadratic
    assert r.converged.all() and np.all(r.value > tau)
  new, old = res["chandrupatla"].num_evals, res["bisection"].num_evals
  print(f"quadratic: evaluations per direction {new.mean():.2f} (max {new.max()}) vs bisection "
        f"{old.mean():.2f} (max {old.max()})")
  assert new.mean() <= 0.4 * old.mean() and new.max() <= old.max()


_SCALES = np.exp(np.random.default_rng(1).uniform(-2, 2, size=200)).astype(np.float32)
# name: (metric of t = r·scale, threshold, centre value, crossing, root in t (closed form))
_RAYS = {
    "steep_sigmoid": (lambda t: 2 * jax.nn.sigmoid((t - 1.3) / 0.01), 1.0, 0.0, "above", 1.3),
    "flat_then_steep": (lambda t: jnp.where(t < 1, 1e-3 * t ** 2, 1e-3 + 50 * (t - 1) ** 3), 1.0,
                        0.0, "above", 1 + (0.999 / 50) ** (1 / 3)),
    "nan_beyond": (lambda t: jnp.where(t < 0.9, 0.5 * t ** 2, jnp.nan), 1.0, 0.0, "above", 0.9),
    # Crosses at t = 0.7, back below on (1.5, 2.5), crosses again at 2.5. Every first bracket
    # ends inside the crossed stretch (0.7, 1.5) (checked below), so both find t = 0.7.
    "crossing_before_a_dip": (
        lambda t: jnp.where(t < 1.5, t / 0.7, jnp.where(t < 2.5, 0.5, t - 1.5)), 1.0, 0.0, "above",
        0.7),
    "accuracy_step_below": (lambda t: jnp.where(t < 0.4, 1.0, jnp.where(t < 0.8, 0.95, 0.5)), 0.9,
                            1.0, "below", 0.8),
}


@pytest.mark.parametrize("name", sorted(_RAYS))
def test_one_dimensional_rays_give_the_crossing_within_rtol(name):
  f, tau, centre, crossing, root = _RAYS[name]
  scales = jnp.asarray(_SCALES)
  new, old = _both(lambda r: f(r * scales), len(_SCALES), tau, centre, crossing)
  exact = root / _SCALES
  for res in (new, old):
    rel = res["radius"] / exact - 1
    assert np.all(rel >= -1e-6) and np.all(rel <= UPPER), (name, rel.min(), rel.max())
    assert res["converged"].all() and not res["censored"].any()
    value = res["value"]
    assert np.all(np.isnan(value) | ((value > tau) if crossing == "above" else (value < tau)))
  a, b = new["num_evals"], old["num_evals"]
  print(f"{name}: evaluations {a.mean():.2f} (max {a.max()}) vs bisection {b.mean():.2f} "
        f"(max {b.max()})")
  # Never more than one evaluation above bisection on these rays.
  assert np.all(a <= b + 1)


def test_crossing_before_a_dip_bracket_assumption():
  # The dip case above relies on the bracket's right end landing in (0.7, 1.5): check it.
  for s in _SCALES:
    r = 0.125
    while r * s <= 0.7:
      r *= 2
    assert 0.7 < r * s < 1.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A swiss-roll MLP trained in-process for 200 steps (as the binaries' tests do)."""
  from genviz_jax import train, workdir
  from genviz_jax.configs import swissroll
  c = swissroll.get_config("quick")
  c.num_steps = 200
  c.log_every = c.eval_every = c.checkpoint_every = 200
  c.lr_boundaries = ()
  c.plot = False
  c.seed = 0
  path = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(c, path)
  return workdir.load(path)


def test_trained_minimum_same_radii_in_fewer_evaluations(trained):
  spec = basin.RandomDirections(jax.random.key(0), 256)
  kw = dict(threshold=1.0, data=trained.dataset.train, chunk_size=128, rtol=RTOL)
  res = {m: basin.radii(trained.metric_fn, trained.params, spec, method=m, **kw)
         for m in ("chandrupatla", "bisection")}
  new, old = res["chandrupatla"], res["bisection"]
  assert new.num_censored == old.num_censored == 0
  rel = new.radius / old.radius - 1
  assert np.max(np.abs(rel)) <= UPPER
  ratio = new.num_evals.mean() / old.num_evals.mean()
  dv = new.volume(num_bootstrap=0).log10_volume - old.volume(num_bootstrap=0).log10_volume
  print(f"trained MLP: evaluations {new.num_evals.mean():.2f} (max {new.num_evals.max()}) vs "
        f"bisection {old.num_evals.mean():.2f} (max {old.num_evals.max()}), ratio {ratio:.3f}; "
        f"max |relative radius difference| {np.max(np.abs(rel)):.1e}; log10 V difference "
        f"{dv:.2e} (n = {new.dim})")
  assert ratio <= 0.6
  assert new.num_evals.max() <= old.num_evals.max()


_FOUR = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np, jax
from genviz_jax import basin, engine
import sharding_worker
_, fn, params, _, train = sharding_worker.problem()
r = basin.radii(fn, params, basin.RandomDirections(jax.random.key(5), 12), threshold=0.5,
                relative=True, data=train, two_sided=True, chunk_size=2, method="chandrupatla",
                mesh=engine.point_mesh())
assert jax.device_count() == 4
np.save({out!r}, r.radius)
"""


@pytest.mark.slow
def test_four_simulated_devices_give_identical_radii(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  import sharding_worker
  _, fn, params, _, train = sharding_worker.problem()
  one = basin.radii(fn, params, basin.RandomDirections(jax.random.key(5), 12), threshold=0.5,
                    relative=True, data=train, two_sided=True, chunk_size=2,
                    method="chandrupatla")
  out = str(tmp_path / "four.npy")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", _FOUR.format(tests=os.path.join(ROOT, "tests"),
                                                            out=out)],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  np.testing.assert_array_equal(np.load(out), one.radius)
  assert np.ptp(one.radius) > 0


def test_unknown_method_is_one_line():
  with pytest.raises(ValueError, match="method='brent'; allowed: bisection, chandrupatla") as e:
    basin.radii(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.zeros(2)}, {"w": jnp.ones((1, 2))},
                threshold=1.0, method="brent")
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", ["bisection", "chandrupatla"])
@pytest.mark.parametrize("slots", [1, 7, 64])
def test_refill_gives_each_ray_the_lockstep_result(method, slots):
  # Rays with radii over four octaves and one censored ray: a slot that finishes takes the next
  # ray, so rays start at different iterations; each ray's result must be what it gets when all
  # rays step together (its proposals depend on its own metric values only).
  num, tau = 40, 0.7
  scale = jnp.exp(jnp.linspace(-3.0, 3.0, num)).at[5].set(1e-6)
  cfg = bisection.Config(lambda v: ~(v <= tau), lambda v: bisection.log_score(v, tau, 0.0),
                         0.125, 64.0, RTOL)
  by_ray = lambda ray, r: 0.5 * (scale[ray] * r) ** 2
  ref = bisection.lockstep(lambda r: by_ray(jnp.arange(num), r), num, method, cfg, 80)
  got = bisection.refill(by_ray, num, slots, method, cfg, 80)
  for k in ref:
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(ref[k]), err_msg=k)
  assert bool(got["censored"][5]) and int(np.sum(np.asarray(got["censored"]))) == 1


def test_refill_stops_a_ray_at_max_iter_unconverged():
  tau = 0.7
  cfg = bisection.Config(lambda v: ~(v <= tau), None, 0.125, 64.0, RTOL)
  got = bisection.refill(lambda ray, r: 0.5 * r ** 2, 6, 2, "bisection", cfg, 4)
  assert not np.asarray(got["converged"]).any()
  assert np.all(np.asarray(got["num_evals"]) == 4)
