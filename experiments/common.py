"""How every binary runs: flags, one library call, exit codes.

`run_binary(job, define_flags, default_config=...)` checks the command line before absl parses it,
so that each of these ends as ONE line `error: ...` on stderr with exit status 2, never a
traceback:
  - a config file that is missing, fails to import, has no get_config(), or rejects the variant
    (`--config=PATH[:variant]`);
  - an override of a key the config does not have (`--config.no_such_key=1`), or one whose value
    does not parse as the key's type (`--config.grid_points=abc`);
  - a flag absl rejects (unknown flag, required flag missing) or stray arguments;
  - a ValueError / OSError / KeyError raised by the job (bad config values, a missing workdir, a
    workdir without a readable checkpoint): the library's messages name the value and what is
    allowed.
`--help` keeps absl's behaviour.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging as py_logging
import os
import re
import sys
from typing import Callable, NoReturn

from absl import app
from absl import flags
from absl import logging


class UsageError(ValueError):
  """Bad flags, configs or files: reported as one line, exit status 2."""


def fail(message: str) -> NoReturn:
  """Prints `error: <first line of message>` on stderr and exits with status 2."""
  text = str(message).strip()
  print(f"error: {text.splitlines()[0] if text else 'bad input'}", file=sys.stderr, flush=True)
  sys.exit(2)


class _QuietCheckpointing(py_logging.Filter):
  """Drops Orbax's INFO chatter (a dozen lines per checkpoint); keeps its warnings."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def quiet_checkpoint_logging() -> None:
  """Keeps binaries' logs to progress lines: Orbax INFO records are dropped."""
  logging.get_absl_handler().addFilter(_QuietCheckpointing())


def run_guarded(fn: Callable[[], object]) -> None:
  """Runs fn(); a ValueError / OSError / KeyError becomes `error: <message>`, exit 2."""
  try:
    fn()
  except (ValueError, OSError, KeyError) as e:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError):
      msg = f"missing or unknown key {msg}"
    fail(msg)


# ------------------------------------------------------------------------- config checks


def _config_spec(argv: list[str], name: str, default: str | None) -> str | None:
  """The value of --NAME=SPEC (or --NAME SPEC) in argv; the last one wins; else `default`."""
  spec = default
  for i, a in enumerate(argv[1:], 1):
    m = re.match(rf"^--?{name}=(.*)$", a)
    if m:
      spec = m.group(1)
    elif a in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def load_config_file(spec: str, name: str = "config"):
  """Imports PATH of `PATH[:variant]` and returns get_config(variant); UsageError if it cannot."""
  path, has_variant, variant = spec.partition(":")
  flag = f"--{name}={spec}"
  if not os.path.isfile(path):
    raise UsageError(f"{flag}: no such config file {path!r}; give a Python file with "
                     "get_config(), e.g. experiments/configs/NAME.py[:variant]")
  try:
    loader = importlib.machinery.SourceFileLoader(f"_{name}_file_check", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - any failure of the user's file is a usage error
    first = (str(e).strip().splitlines() or [""])[0]
    raise UsageError(f"{flag}: the config file fails to import ({type(e).__name__}: "
                     f"{first})") from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise UsageError(f"{flag}: {path} has no get_config(); a config file defines "
                     "get_config(variant='')")
  try:
    return get_config(variant) if has_variant else get_config()
  except (ValueError, TypeError, KeyError) as e:
    first = (str(e).strip().splitlines() or [""])[0]
    raise UsageError(f"{flag}: {first}") from None


def _check_key(config, dotted: str, arg: str) -> None:
  cur, seen = config, []
  for part in dotted.split("."):
    keys = list(cur.keys()) if hasattr(cur, "keys") else []
    if part not in keys:
      where = "the config" if not seen else f"config.{'.'.join(seen)}"
      allowed = ", ".join(sorted(keys)) or "none (not a group of keys)"
      raise UsageError(f"{arg}: {where} has no key {part!r} (config.{dotted} does not exist); "
                       f"allowed keys: {allowed}")
    cur, seen = cur[part], seen + [part]


def check_config_args(argv: list[str], name: str = "config",
                      default: str | None = None) -> None:
  """UsageError for a bad config file or an override of a key the config does not have."""
  spec = _config_spec(argv, name, default)
  overrides = [a for a in argv[1:] if re.match(rf"^--?(no)?{name}\.", a)]
  if spec is None:
    return  # absl reports the missing required flag
  config = load_config_file(spec, name)
  for arg in overrides:
    dotted = re.sub(rf"^--?(no)?{name}\.", "", arg).split("=", 1)[0]
    _check_key(config, dotted, arg)


# ---------------------------------------------------------------------------- the runner


def _parser(config_names: tuple[str, ...]):
  def parse(argv):
    try:
      rest = flags.FLAGS(argv)
      for n in config_names:
        getattr(flags.FLAGS, n)  # a config that failed to load raises here, not later
    except flags.Error as e:
      msg = re.sub(r"^flag ", "", str(e))
      missing = re.match(r"^--(\w+)=None: Flag --\w+ must have a value other than None", msg)
      fail(f"--{missing.group(1)} is required (--help lists the flags)" if missing else msg)
    except Exception as e:  # noqa: BLE001 - config parsing raises many types
      fail(f"{type(e).__name__}: {e}")
    if len(rest) > 1:
      fail(f"unexpected arguments: {' '.join(rest[1:])}; give flags only (--help lists them)")
    return rest
  return parse


def run_binary(job: Callable[[], object], define_flags: Callable[[], None] | None = None, *,
               config: str | None = "config", default_config: str | None = None) -> None:
  """Defines the flags, checks and parses the command line, runs job(); exit codes as above.

  Args:
    job: the binary's one library call (reads FLAGS); its ValueError/OSError/KeyError are one
      line, exit 2.
    define_flags: defines the binary's flags (called after the config checks: ml_collections
      reads the overrides of a default config while its flag is defined).
    config: the name of the config flag, or None for a binary without one.
    default_config: that flag's default file.
  """
  try:
    if config is not None:
      check_config_args(sys.argv, config, default_config)
    if define_flags is not None:
      define_flags()
  except UsageError as e:
    fail(str(e))
  except Exception as e:  # noqa: BLE001 - flag definitions parse the default config
    fail(f"{type(e).__name__}: {e}")

  def main(argv):
    del argv  # checked by the parser
    quiet_checkpoint_logging()
    run_guarded(job)

  app.run(main, flags_parser=_parser(() if config is None else (config,)))
