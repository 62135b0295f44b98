"""Runs the paper's phases in order, each once: a rerun resumes at the first unfinished phase.

Each phase writes its figures and, when it has finished, WORKDIR/phases/NAME.json (atomically).
A rerun skips every phase whose JSON exists, so a killed job resumes at the phase it was in
(training sub-runs resume from their own checkpoints). Every phase is a deterministic function of
the config, so a resumed job ends with the same numbers. WORKDIR/paper_config.json pins the
config (without `phases`): a workdir holding a run of another config is refused.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import ml_collections
from absl import logging

from genviz_jax import files
from genviz_jax.paper import common
from genviz_jax.paper.phase_gap_sweep import phase_gap_sweep
from genviz_jax.paper.phases_geometry import phase_basin, phase_landscape, phase_sharpness
from genviz_jax.paper.phases_training import (phase_circles, phase_decision, phase_minefield,
                                              phase_optimizers)

PHASES = ("decision", "minefield", "landscape", "basin", "sharpness", "gap_sweep", "circles",
          "optimizers")
PHASE_FNS: dict[str, Callable] = {
    "decision": phase_decision, "minefield": phase_minefield, "landscape": phase_landscape,
    "basin": phase_basin, "sharpness": phase_sharpness, "gap_sweep": phase_gap_sweep,
    "circles": phase_circles, "optimizers": phase_optimizers,
}


def wanted_phases(cfg) -> list[str]:
  """cfg.phases (comma list) in the order of PHASES; ValueError for an unknown name."""
  wanted = common.comma_list(cfg.phases)
  unknown = [p for p in wanted if p not in PHASES]
  if unknown:
    raise ValueError(f"phases contains {unknown[0]!r}; allowed: {', '.join(PHASES)}")
  return [p for p in PHASES if p in wanted]


def pin_config(cfg: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes WORKDIR/paper_config.json, or checks that the one there is cfg's (phases aside)."""
  cfg_json = json.loads(cfg.to_json(sort_keys=True))
  cfg_json.pop("phases")  # running a subset of phases is a resumption, not another config
  changed = files.pin_json(os.path.join(workdir, "paper_config.json"), cfg_json)
  if changed:
    raise ValueError(f"workdir={workdir!r} holds a paper run with another config (differs in "
                     f"{', '.join(changed)}); use a new workdir")


def run(cfg: ml_collections.ConfigDict, workdir: str,
        phase_fns: dict[str, Callable] | None = None) -> dict[str, dict]:
  """Runs (or resumes) every phase of cfg.phases; returns {phase: result}.

  `phase_fns` replaces PHASE_FNS entries (name -> fn(cfg, workdir) -> dict), for tests.
  """
  fns = {**PHASE_FNS, **(phase_fns or {})}
  ordered = wanted_phases(cfg)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} exists and is not a directory")
  os.makedirs(os.path.join(workdir, "phases"), exist_ok=True)
  pin_config(cfg, workdir)
  results = {}
  for i, name in enumerate(ordered):
    path = os.path.join(workdir, "phases", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        results[name] = json.load(f)
      logging.info("phase %d/%d %s: done earlier, skipped", i + 1, len(ordered), name)
      continue
    logging.info("phase %d/%d %s: running", i + 1, len(ordered), name)
    t0 = time.time()
    res = fns[name](cfg, workdir)
    res["wall_time_s"] = round(time.time() - t0, 2)
    files.write_json_atomic(path, res)
    results[name] = res
    logging.info("phase %d/%d %s: finished in %.1f s", i + 1, len(ordered), name,
                 res["wall_time_s"])
  return results
