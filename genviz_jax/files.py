"""Atomic output files: a kill never leaves half a file behind.

Every writer goes through a temporary name in the same folder and `os.replace`, which is atomic
on POSIX file systems, so a reader (or a resumed job) sees the old file or the new one, never a
truncated one.
"""

from __future__ import annotations

import json
import os

import numpy as np


def _json_default(x):
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serializable: {type(x).__name__}")


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` as indented, key-sorted JSON (numpy scalars and arrays allowed) to `path`."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
    f.write("\n")
  os.replace(tmp, path)


def pin_json(path: str, obj) -> list[str]:
  """Binds a folder to `obj` through the JSON manifest at `path`: writes it if absent, else
  returns the sorted top-level keys in which the manifest differs from obj ([] when equal).

  Resumable work calls this first: a folder holding other work is refused, never overwritten.
  """
  want = json.loads(json.dumps(obj, default=_json_default))  # as it reads back from disk
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_json_atomic(path, want)
    return []
  with open(path) as f:
    have = json.load(f)
  return sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))


def save_npz_atomic(path: str, arrays: dict, metadata: dict | None = None) -> None:
  """np.savez of `arrays` (plus `metadata` as a JSON string under "metadata") to `path`."""
  tmp = f"{path}.tmp{os.getpid()}.npz"
  extra = {} if metadata is None else {"metadata": np.asarray(json.dumps(metadata, sort_keys=True))}
  np.savez(tmp, **extra, **arrays)
  os.replace(tmp, path)


def save_npy_atomic(path: str, array) -> None:
  """np.save of one array to `path`."""
  tmp = f"{path}.tmp{os.getpid()}.npy"
  np.save(tmp, np.asarray(array))
  os.replace(tmp, path)
