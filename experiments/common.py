"""What every binary shares: one-line errors with exit status 2, progress lines, JSON output."""

from __future__ import annotations

import json
import logging as py_logging
import os
import sys
import time
from typing import Callable

from absl import logging


class _QuietCheckpointing(py_logging.Filter):
  """Drops Orbax's INFO chatter (a dozen lines per checkpoint); keeps its warnings."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def quiet_checkpoint_logging() -> None:
  """Keeps binaries' logs to progress lines: Orbax INFO records are dropped."""
  logging.get_absl_handler().addFilter(_QuietCheckpointing())


class UsageError(ValueError):
  """Bad flags, configs or files: reported as one line, exit status 2."""


def run_guarded(fn: Callable[[], object]) -> None:
  """Runs fn(); a ValueError / FileNotFoundError becomes `error: <message>` on stderr, exit 2."""
  try:
    fn()
  except (ValueError, FileNotFoundError, NotADirectoryError, KeyError) as e:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError):
      msg = f"missing or unknown key {msg}"
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON through a temporary file and a rename: a kill never leaves half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
    f.write("\n")
  os.replace(tmp, path)


def _json_default(x):
  import numpy as np
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serializable: {type(x).__name__}")


class Progress:
  """Logs `what done/total, rate unit/s, ETA` at most every `every_s` seconds.

  The first `skip` updates (compilation) are left out of the rate.
  """

  def __init__(self, what: str, total: int, unit: str = "steps", every_s: float = 5.0,
               skip: int = 1):
    self.what, self.total, self.unit, self.every_s, self.skip = what, total, unit, every_s, skip
    self._n_updates = 0
    self._t0 = None
    self._done0 = 0
    self._last = 0.0

  def update(self, done: int, extra: str = "", force: bool = False) -> None:
    now = time.time()
    self._n_updates += 1
    if self._n_updates <= self.skip or self._t0 is None:
      self._t0, self._done0 = now, done
      if not force:
        return
    if not force and now - self._last < self.every_s and done < self.total:
      return
    self._last = now
    dt = now - self._t0
    rate = (done - self._done0) / dt if dt > 0 and done > self._done0 else float("nan")
    eta = (self.total - done) / rate if rate == rate and rate > 0 else float("nan")
    logging.info("%s %d/%d, %.1f %s/s, ETA %s %s", self.what, done, self.total, rate, self.unit,
                 _fmt_s(eta), extra)


def _fmt_s(s: float) -> str:
  if s != s:
    return "?"
  s = int(s)
  return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
