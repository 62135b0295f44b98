"""Resumable radius sweeps: finished chunks on disk, bound to the sweep's fingerprint."""

from __future__ import annotations

import hashlib
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genviz_jax import files


def fingerprint(**fields) -> dict:
  """JSON-able identity of a sweep: arrays are replaced by a SHA-256 of their bytes."""
  def digest(tree):
    if tree is None:
      return None
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
      a = np.ascontiguousarray(np.asarray(leaf))
      h.update(jax.tree_util.keystr(path).encode())
      h.update(str((a.dtype.str, a.shape)).encode())
      h.update(a.tobytes())
    return h.hexdigest()
  out = {}
  for k, v in fields.items():
    out[k] = digest(v) if k in ("params", "data", "directions") else v
  return out


class ChunkStore:
  """Finished chunks of a radius sweep in a directory: a sweep killed and rerun continues.

  Files: `sweep.json` (the sweep's fingerprint: parameters, centre, data and directions hashed)
  and `chunk_<start>.npz`, each written to a temporary name and renamed, so a kill never leaves a
  partial chunk. A directory holding a different sweep is refused (ValueError), never overwritten.
  """

  MANIFEST = "sweep.json"

  def __init__(self, path: str):
    self.path = path
    self._bound = False

  def bind(self, fingerprint: dict) -> None:
    diff = files.pin_json(os.path.join(self.path, self.MANIFEST), fingerprint)
    if diff:
      raise ValueError(f"{self.path} holds chunks of a different sweep (differs in "
                       f"{', '.join(diff)}); use another directory")
    self._bound = True

  def _file(self, start: int) -> str:
    return os.path.join(self.path, f"chunk_{start:012d}.npz")

  def get(self, start: int) -> dict[str, np.ndarray] | None:
    if not self._bound:
      raise RuntimeError("ChunkStore.get before bind")
    f = self._file(start)
    if not os.path.exists(f):
      return None
    with np.load(f) as z:
      return {k: z[k] for k in z.files}

  def put(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
    if not self._bound:
      raise RuntimeError("ChunkStore.put before bind")
    f = self._file(start)
    tmp = f"{f}.tmp{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, f)

  def num_chunks(self) -> int:
    if not os.path.isdir(self.path):
      return 0
    return sum(1 for n in os.listdir(self.path) if n.startswith("chunk_") and n.endswith(".npz")
               and ".tmp" not in n)
