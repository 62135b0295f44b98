"""Progress lines for long work: `what done/total, rate unit/s, ETA`, compile steps left out."""

from __future__ import annotations

import time

from absl import logging


def format_seconds(s: float) -> str:
  """`1h02m03s` / `2m03s`; `?` for NaN."""
  if s != s:
    return "?"
  s = int(s)
  return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


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
                 format_seconds(eta), extra)

  def callback(self):
    """`fn(done, *_)` for evaluators' progress / on_chunk hooks (forces the last line)."""
    return lambda done, *rest: self.update(done, force=done >= self.total)
