"""The engine's one compile cache: jitted functions keyed by the user's callables, held weakly.

Evaluators compile a function of the user's loss (and other callables). Keying a cache by the
callable itself fails for unhashable callables (an equinox Module or a dataclass holding arrays
raises `TypeError: unhashable type`), and an `lru_cache` or a jit static argument keeps every
callable, with the model and data it captures, alive for the life of the process.

Here entries are keyed by the callables' identities and hold them only through weak references:
an entry disappears when one of its callables is garbage collected, and the jitted function
itself reaches the callables only through those weak references (at trace time, while the caller
holds them). A callable that cannot be weakly referenced is held strongly if it is hashable
(builtins, which live forever anyway), or not cached at all. A bound method is keyed by its
object and function, so `model.apply` passed twice finds the same entry.
"""

from __future__ import annotations

import threading
import types
import weakref
from typing import Any, Callable, Hashable

import jax

_LOCK = threading.Lock()
_ENTRIES: dict[tuple, Callable] = {}


class _Strong:
  """A 'reference' to an object that cannot be weakly referenced."""

  def __init__(self, obj):
    self.obj = obj

  def __call__(self):
    return self.obj


def _parts(owner) -> tuple:
  """What identifies owner: (object, function) for a bound method, else (owner,)."""
  if isinstance(owner, types.MethodType):
    return (owner.__self__, owner.__func__)
  return (owner,)


def _rebuild(kind: str, live: tuple):
  return types.MethodType(live[1], live[0]) if kind == "method" else live[0]


def _reference(obj, on_dead) -> Callable[[], Any] | None:
  try:
    return weakref.ref(obj, on_dead)
  except TypeError:
    try:
      hash(obj)
    except TypeError:
      return None
    return _Strong(obj)


class Bound:
  """fn with keyword settings bound, equal (and hashed) by value: a cache key that survives
  being rebuilt on every call, unlike functools.partial (compared by identity)."""

  def __init__(self, fn: Callable, **settings):
    self.fn = fn
    self.settings = tuple(sorted(settings.items()))
    self._key = (fn, self.settings)

  def __call__(self, *args):
    return self.fn(*args, **dict(self.settings))

  def __eq__(self, other):
    return isinstance(other, Bound) and other._key == self._key

  def __hash__(self):
    return hash(self._key)


def cached_jit(impl: Callable, owners: tuple, static: Hashable = (), **jit_kwargs) -> Callable:
  """jax.jit(lambda *args: impl(*owners, *args)), cached per (impl, owners' identities, static).

  Args:
    impl: a module-level function impl(*owners, *args); it must not close over user objects.
    owners: the user's callables (loss functions, delta builders, ...) impl needs.
    static: any hashable extra key (chunk sizes, a mesh, tree structures); impl receives it
      through `args` or closes over nothing but it.
    jit_kwargs: passed to jax.jit (e.g. static_argnames, donate_argnums).

  Returns:
    A jitted callable. Calling it traces impl with the live owners; the cache keeps it as long
    as every owner is alive.
  """
  kinds = tuple("method" if isinstance(o, types.MethodType) else "plain" for o in owners)
  parts = tuple(_parts(o) for o in owners)
  key = (impl, tuple(tuple(id(p) for p in ps) for ps in parts), kinds, static,
         tuple(sorted(jit_kwargs.items())))
  with _LOCK:
    fn = _ENTRIES.get(key)
  if fn is not None:
    return fn

  def on_dead(_ref, key=key):
    with _LOCK:
      _ENTRIES.pop(key, None)

  refs = [[_reference(p, on_dead) for p in ps] for ps in parts]
  cacheable = all(r is not None for rs in refs for r in rs)
  if not cacheable:
    live = owners
    return jax.jit(lambda *args: impl(*live, *args), **jit_kwargs)

  def traced(*args):
    live = []
    for kind, rs in zip(kinds, refs):
      objs = tuple(r() for r in rs)
      if any(o is None for o in objs):
        raise RuntimeError("a cached evaluator's callable was garbage collected")
      live.append(_rebuild(kind, objs))
    return impl(*live, *args)

  fn = jax.jit(traced, **jit_kwargs)
  with _LOCK:
    _ENTRIES[key] = fn
  return fn


def num_entries() -> int:
  """Live cache entries (for tests of the no-leak promise)."""
  with _LOCK:
    return len(_ENTRIES)
