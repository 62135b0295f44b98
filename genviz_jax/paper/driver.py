"""Runs the paper's phases in order, each once (genviz_jax.jobs.phased): a rerun resumes at the
first unfinished phase. Every phase is a deterministic function of the config, so a resumed job
ends with the same numbers. WORKDIR/paper_config.json pins the config (without `phases`).
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from genviz_jax.jobs import phased
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
  return phased.wanted_phases(cfg.phases, PHASES)


def run(cfg: ml_collections.ConfigDict, workdir: str,
        phase_fns: dict[str, Callable] | None = None) -> dict[str, dict]:
  """Runs (or resumes) every phase of cfg.phases; returns {phase: result}.

  `phase_fns` replaces PHASE_FNS entries (name -> fn(cfg, workdir) -> dict), for tests. The
  config is pinned in WORKDIR/paper_config.json.
  """
  return phased.run(cfg, workdir, {**PHASE_FNS, **(phase_fns or {})}, "paper_config.json")
