"""The second job: beyond Huang et al. 2019, along its references, as resumable phases.

`run(config, workdir)` runs (or resumes) the phases of config.phases (phases.py: minima,
connectivity, trajectory, skip) with genviz_jax.jobs.phased; `claims(results)` checks Garipov
et al.'s and Li et al.'s claims against the measured numbers; `write_outputs` writes
paper_summary.json and report.html. Config: genviz_jax/configs/beyond.py.

Layout of WORKDIR: phases/*.json, runs/ (trainer workdirs), connectivity/, trajectory/, skip/,
figures/, report.html, paper_summary.json, beyond_config.json.
"""

from __future__ import annotations

import ml_collections

from genviz_jax.beyond.claims import claims
from genviz_jax.beyond.outputs import write_outputs
from genviz_jax.beyond.phases import PHASE_FNS
from genviz_jax.jobs import phased

PHASES = tuple(PHASE_FNS)


def run(cfg: ml_collections.ConfigDict, workdir: str, phase_fns: dict | None = None) -> dict:
  """Runs (or resumes) every phase of cfg.phases; returns {phase: result}.

  `phase_fns` replaces PHASE_FNS entries (name -> fn(cfg, workdir) -> dict), for tests.
  """
  return phased.run(cfg, workdir, {**PHASE_FNS, **(phase_fns or {})}, "beyond_config.json")


__all__ = ["PHASES", "PHASE_FNS", "claims", "run", "write_outputs"]
