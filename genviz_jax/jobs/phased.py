"""A job of named phases, each run once: a rerun resumes at the first unfinished phase.

Each phase is `fn(cfg, workdir) -> dict` (JSON-able). When it has finished, its result is written
to WORKDIR/phases/NAME.json atomically; a rerun skips every phase whose JSON exists, so a killed
job resumes at the phase it was in (training sub-runs resume from their own checkpoints). The
config (without `phases`, the selection) is pinned in WORKDIR/<pin_name>: a workdir holding a run
of another config is refused. Used by the paper job and the beyond job.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Mapping

import ml_collections
from absl import logging

from genviz_jax import files


def comma_list(value) -> list[str]:
  return [x.strip() for x in str(value).split(",") if x.strip()]


def wanted_phases(selection, order: tuple[str, ...]) -> list[str]:
  """The names in the comma list `selection`, in the order of `order`; ValueError if unknown."""
  wanted = comma_list(selection)
  unknown = [p for p in wanted if p not in order]
  if unknown:
    raise ValueError(f"phases contains {unknown[0]!r}; allowed: {', '.join(order)}")
  return [p for p in order if p in wanted]


def pin_config(cfg: ml_collections.ConfigDict, workdir: str, pin_name: str) -> None:
  """Writes WORKDIR/pin_name, or checks that the one there is cfg's (phases aside)."""
  cfg_json = json.loads(cfg.to_json(sort_keys=True))
  cfg_json.pop("phases", None)  # running a subset of phases is a resumption, not another config
  changed = files.pin_json(os.path.join(workdir, pin_name), cfg_json)
  if changed:
    raise ValueError(f"workdir={workdir!r} holds a run with another config (differs in "
                     f"{', '.join(changed)}); use a new workdir")


def run(cfg: ml_collections.ConfigDict, workdir: str, phase_fns: Mapping[str, Callable],
        pin_name: str) -> dict[str, dict]:
  """Runs (or resumes) the phases cfg.phases (a comma list) in the order of `phase_fns`.

  Returns {phase: result}; each result gains "wall_time_s" (of the run that computed it).
  """
  ordered = wanted_phases(cfg.phases, tuple(phase_fns))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} exists and is not a directory")
  os.makedirs(os.path.join(workdir, "phases"), exist_ok=True)
  pin_config(cfg, workdir, pin_name)
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
    res = phase_fns[name](cfg, workdir)
    res["wall_time_s"] = round(time.time() - t0, 2)
    files.write_json_atomic(path, res)
    results[name] = res
    logging.info("phase %d/%d %s: finished in %.1f s", i + 1, len(ordered), name,
                 res["wall_time_s"])
  return results
