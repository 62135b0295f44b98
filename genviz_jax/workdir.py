"""Training workdirs: the layout, and how other code loads a trained run.

A workdir written by the train binary (genviz_jax.train.train_and_evaluate):

    WORKDIR/
      config.json          the full ml_collections config (JSON): rebuilds dataset, model, optimizer
      metrics.jsonl        one JSON line per `log_every` steps: step, objective (mean over the
                           block), objective_last, grad_norm, beta, learning_rate, and at eval steps
                           train_/test_ loss and accuracy
      checkpoints/STEP/    Orbax checkpoints (written to a temporary name and renamed: atomic):
                           item "state" = {"params", "batch_stats", "opt_state", "step", "rng"},
                           item "meta" = {"wall_time_s"}; the last `keep_checkpoints` are kept and
                           the final step is always saved
      snapshots/params_STEP.npz   optional (snapshot_every > 0): the parameters at every multiple
                           of snapshot_every (and step 0) up to checkpoint STEP since the previous
                           file; arrays "__steps__" (S,) and one (S, ...) array per parameter,
                           keyed by its "/"-joined path ("Dense_0/kernel")
      summary.json         written last, when the run has finished: train/test accuracy and
                           loss, poison_factor, num_params, steps, seed, wall_time_s, steps_per_s
      decision_boundary.png  for 2-D inputs, drawn by the train job (not by the trainer)

Loading (the contract for landscape, basin, sharpness and paper code):

    t = workdir.load("runs/bad")            # latest checkpoint; load(dir, step=1000) for another
    t.metric_fn(t.params, t.dataset.train)  # {"loss", "accuracy"}, inference mode
    steps, params = workdir.snapshots("runs/good")  # params leaves have leading axis S

A missing workdir, one that is not a genviz_jax run (no config.json / no checkpoint), a step
that was not saved, or a checkpoint that does not match the config's model is a one-line
ValueError. A checkpoint that cannot be read (its files deleted or cut by a kill) is skipped
when the latest one is asked for: `load` (and the trainer's resumption) falls back to the last
readable step and logs a warning saying so. An unreadable step asked for by number is a
ValueError listing the readable steps; a workdir without any readable step is one too.

This module knows the layout only; what a config builds (dataset, model, optimizer, initial
state) comes from genviz_jax.train_config, so the trainer may import this module without a cycle.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from genviz_jax import files
from genviz_jax import models as models_lib
from genviz_jax import train_config
from genviz_jax import trees

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
SNAPSHOTS = "snapshots"
# Config keys that may change between a run and its resumption (they do not affect the
# trained parameters).
RESUMABLE_KEYS = ("plot", "eval_batch_size", "keep_checkpoints", "data_dir")


@dataclasses.dataclass
class Trained:
  """A trained run. params: the "params" pytree; model_state: {"batch_stats": ...} or {}."""
  config: ml_collections.ConfigDict
  dataset: Any  # genviz_jax.data.Dataset
  model: Any  # flax.linen.Module
  params: Any
  model_state: dict
  metric_fn: Callable  # fn(params, batch) -> {"loss", "accuracy"} (batch means, inference mode)
  summary: dict | None
  step: int
  workdir: str


def _config_dict(config) -> dict:
  return json.loads(config.to_json(sort_keys=True))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json of a workdir as a ConfigDict (tuples come back as lists)."""
  if not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} does not exist or is not a directory")
  path = os.path.join(workdir, CONFIG)
  if not os.path.isfile(path):
    raise ValueError(f"workdir={workdir!r} has no {CONFIG}: not a genviz_jax training run")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def _manager(workdir: str, keep: int = 2, read_only: bool = False):
  import orbax.checkpoint as ocp
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=False, create=not read_only,
      read_only=read_only)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINTS)),
                               options=options,
                               item_handlers={"state": ocp.StandardCheckpointHandler(),
                                              "meta": ocp.JsonCheckpointHandler()})


def _shapes(tree) -> dict:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
  return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in flat if hasattr(x, "shape")}


class CheckpointMismatchError(ValueError):
  """A checkpoint holds parameters of another model than its workdir's config builds."""


def _check_matches(mngr, step: int, abstract, workdir: str) -> None:
  """ValueError unless the checkpoint's params/batch_stats have the abstract state's shapes."""
  try:
    meta = mngr.item_metadata(step)["state"]
    tree = getattr(meta, "tree", meta)
  except Exception:  # noqa: BLE001  (unreadable metadata: the restore's own checks remain)
    return
  if not isinstance(tree, dict):
    return
  for coll in ("params", "batch_stats"):
    saved = _shapes(tree.get(coll, {}) or {})
    want = _shapes(abstract[coll])
    if saved != want:
      diff = sorted(set(saved.items()) ^ set(want.items()))
      raise CheckpointMismatchError(
          f"checkpoint {step} in {workdir!r} does not match the config's model "
          f"({coll} differ, e.g. {diff[0][0]}: saved {saved.get(diff[0][0])}, "
          f"model {want.get(diff[0][0])})")


def _restore(mngr, step: int, abstract, workdir: str):
  """(state, meta) of checkpoint `step`; CheckpointMismatchError if it is another model's."""
  import orbax.checkpoint as ocp
  _check_matches(mngr, step, abstract, workdir)
  try:
    r = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except ValueError as e:
    if not _is_shape_mismatch(e):
      raise
    raise CheckpointMismatchError(
        f"checkpoint {step} in {workdir!r} does not match the config: "
        f"{_first_line(e)}") from None
  return r.state, dict(r.meta or {})


def _first_line(e: BaseException, limit: int = 160) -> str:
  """The first line of an error message, without tensorstore's spec dump, at most `limit` chars."""
  text = str(e).strip().split(" [tensorstore_spec")[0]
  line = text.splitlines()[0] if text else type(e).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


def _is_shape_mismatch(e: ValueError) -> bool:
  text = str(e).lower()
  return "shape" in text and ("mismatch" in text or "does not match" in text
                              or "incompatible" in text)


def _try_restore(mngr, step: int, abstract, workdir: str):
  """((state, meta), None), or (None, why) when the checkpoint's files cannot be read.

  A checkpoint of another model is no unreadable one: CheckpointMismatchError propagates.
  """
  try:
    return _restore(mngr, step, abstract, workdir), None
  except CheckpointMismatchError:
    raise
  except Exception as e:  # noqa: BLE001  (Orbax and tensorstore raise many kinds on bad files)
    return None, _first_line(e)


def _latest_readable(mngr, steps: list[int], abstract, workdir: str):
  """(step, state, meta, [(unreadable newer step, why), ...]) of the newest readable step.

  ValueError naming the workdir when no step is readable.
  """
  bad = []
  for step in sorted(steps, reverse=True):
    got, why = _try_restore(mngr, step, abstract, workdir)
    if got is not None:
      return step, got[0], got[1], bad
    bad.append((step, why))
  reasons = "; ".join(f"{s}: {why}" for s, why in bad)
  raise ValueError(f"workdir={workdir!r} has no readable checkpoint in {CHECKPOINTS}/ "
                   f"({reasons})")


def _warn_fallback(workdir: str, step: int, bad: list, what: str) -> None:
  for s, why in bad:
    logging.warning("checkpoint %d in %r is unreadable (%s); %s step %d, the last readable one",
                    s, workdir, why, what, step)


def _restore_step(mngr, step: int, steps: list[int], abstract, workdir: str):
  """(state, meta) of an explicitly requested step; ValueError listing the readable steps."""
  got, why = _try_restore(mngr, step, abstract, workdir)
  if got is not None:
    return got
  readable = [s for s in steps if s != step and _try_restore(mngr, s, abstract, workdir)[0]]
  raise ValueError(f"checkpoint step={step} in {workdir!r} is unreadable ({why}); readable "
                   f"steps: {', '.join(map(str, readable)) or 'none'}")


class RunDir:
  """The writer's side of a workdir (used by train.train_and_evaluate)."""

  def __init__(self, workdir: str, config):
    self.workdir = workdir
    self.config = config
    self._mngr = None

  @classmethod
  def open(cls, workdir: str, config) -> "RunDir":
    """Checks that `workdir` is new, empty, or a run of the same config; writes nothing."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      raise ValueError(f"workdir={workdir!r} exists and is not a directory")
    if os.path.isdir(workdir) and os.listdir(workdir):
      if not os.path.isfile(os.path.join(workdir, CONFIG)):
        raise ValueError(f"workdir={workdir!r} is not empty and has no {CONFIG}: not a "
                         "genviz_jax run (use a new or empty directory)")
      old = _config_dict(read_config(workdir))
      new = _config_dict(config)
      diff = sorted(k for k in set(old) | set(new)
                    if k not in RESUMABLE_KEYS and old.get(k) != new.get(k))
      if diff:
        k = diff[0]
        raise ValueError(
            f"workdir={workdir!r} holds a run with a different config ({', '.join(diff)}; "
            f"{k}: {old.get(k)!r} there, {new.get(k)!r} now): use a new workdir")
    return cls(workdir, config)

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  @property
  def mngr(self):
    if self._mngr is None:
      os.makedirs(self.workdir, exist_ok=True)
      self._mngr = _manager(self.workdir, keep=int(self.config.keep_checkpoints))
    return self._mngr

  def latest_step(self) -> int | None:
    if not os.path.isdir(self.path(CHECKPOINTS)):
      return None
    return self.mngr.latest_step()

  def read_summary(self) -> dict | None:
    p = self.path(SUMMARY)
    if not os.path.isfile(p):
      return None
    with open(p) as f:
      return json.load(f)

  def restore(self, abstract):
    """(state, meta) of the latest readable checkpoint, or None when there is none.

    Unreadable checkpoints after it are logged and removed: the resumed run writes them again
    (each step's state is a function of the seed and the step alone).
    """
    if self.latest_step() is None:
      return None
    steps = list(self.mngr.all_steps())
    step, state, meta, bad = _latest_readable(self.mngr, steps, abstract, self.workdir)
    _warn_fallback(self.workdir, step, bad, "resuming from")
    for s, _ in bad:
      self.mngr.delete(s)
    return state, meta

  def start(self, step: int) -> None:
    """Writes config.json and drops metrics lines past `step` (they will be recomputed)."""
    os.makedirs(self.workdir, exist_ok=True)
    if not os.path.isfile(self.path(CONFIG)):
      tmp = self.path(CONFIG + f".tmp{os.getpid()}")
      with open(tmp, "w") as f:
        f.write(self.config.to_json(indent=2, sort_keys=True) + "\n")
      os.replace(tmp, self.path(CONFIG))
    p = self.path(METRICS)
    if os.path.isfile(p):
      with open(p) as f:
        lines = [ln for ln in f if ln.strip()]
      keep = []
      for ln in lines:
        try:
          if json.loads(ln)["step"] <= step:
            keep.append(ln)
        except (json.JSONDecodeError, KeyError, TypeError):
          pass  # a line cut by a kill
      if len(keep) != len(lines):
        tmp = p + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
          f.writelines(keep)
        os.replace(tmp, p)

  def append_metrics(self, line: dict) -> None:
    with open(self.path(METRICS), "a") as f:
      f.write(json.dumps(line, sort_keys=True) + "\n")

  def save(self, step: int, state, meta: dict) -> None:
    import orbax.checkpoint as ocp
    self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)), force=True)
    self.mngr.wait_until_finished()

  def save_snapshots(self, step: int, steps: list[int], snaps: list) -> None:
    """snaps: parameter pytrees stacked on a leading axis, len(steps) rows in all."""
    tree = jax.tree.map(lambda *a: np.concatenate(a), *snaps)
    arrays = {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(x)
              for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    arrays["__steps__"] = np.asarray(steps, np.int64)
    os.makedirs(self.path(SNAPSHOTS), exist_ok=True)
    final = os.path.join(self.path(SNAPSHOTS), f"params_{step:09d}.npz")
    # The temporary name must not match the loader's pattern: a kill during the write leaves it.
    tmp = final + f".tmp{os.getpid()}"
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, final)

  def write_summary(self, summary: dict) -> None:
    files.write_json_atomic(self.path(SUMMARY), summary)


def load(workdir: str, step: int | None = None) -> Trained:
  """The trained run in `workdir` at checkpoint `step` (default: the latest readable one)."""
  config = read_config(workdir)
  mngr = _manager(workdir, read_only=True) if os.path.isdir(os.path.join(workdir, CHECKPOINTS)) else None
  steps = sorted(mngr.all_steps()) if mngr is not None else []
  if not steps:
    raise ValueError(f"workdir={workdir!r} has no checkpoint in {CHECKPOINTS}/")
  if step is not None and step not in steps:
    raise ValueError(f"step={step!r} has no checkpoint in {workdir!r}; saved steps: "
                     f"{', '.join(map(str, steps))}")
  dataset = train_config.build_dataset(config)
  model = train_config.build_model(config, dataset)
  tx = train_config.make_optimizer(config)
  abstract = jax.eval_shape(lambda: train_config.init_state(config, model, dataset, tx))
  if step is None:
    step, state, _, bad = _latest_readable(mngr, steps, abstract, workdir)
    _warn_fallback(workdir, step, bad, "loading")
  else:
    state, _ = _restore_step(mngr, step, steps, abstract, workdir)
  # Orbax commits restored arrays to one device; uncommitted, they can meet outputs sharded over
  # several devices (the evaluators' default on a multi-core CPU).
  state = trees.uncommitted(state)
  model_state = train_config.model_state_of(state)
  summary = None
  if os.path.isfile(os.path.join(workdir, SUMMARY)):
    with open(os.path.join(workdir, SUMMARY)) as f:
      summary = json.load(f)
  return Trained(config=config, dataset=dataset, model=model, params=state["params"],
                 model_state=model_state, metric_fn=models_lib.metric_fn(model, model_state),
                 summary=summary, step=int(step), workdir=workdir)


def snapshots(workdir: str) -> tuple[np.ndarray, Any]:
  """(steps (S,), params pytree whose leaves have a leading axis S), sorted by step.

  Empty workdirs or runs without snapshot_every give a ValueError.
  """
  read_config(workdir)  # the workdir checks
  # Only finished files (params_STEP.npz); a kill mid-write leaves a temporary name beside them.
  files = sorted(f for f in glob.glob(os.path.join(workdir, SNAPSHOTS, "params_*.npz"))
                 if re.fullmatch(r"params_\d{9}\.npz", os.path.basename(f)))
  if not files:
    raise ValueError(f"workdir={workdir!r} has no parameter snapshots (train with "
                     "--config.snapshot_every=K)")
  parts = [dict(np.load(f)) for f in files]
  steps = np.concatenate([p.pop("__steps__") for p in parts])
  arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  # A kill between a snapshot file and its checkpoint leaves steps that the resumed run wrote
  # again, identically: keep each step once.
  steps, first = np.unique(steps, return_index=True)
  tree: dict = {}
  for key, a in arrays.items():
    node = tree
    *path, leaf = key.split("/")
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = a[first]
  return steps, tree
