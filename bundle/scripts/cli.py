"""What every command of the bundle shares on the command line: switches as booleans, and failures as one line.

``python -m monai.bundle run ... --resume false`` hands the config the *string* "false". Each workflow config lists its
switches once (``"switches": {"resume": "@resume", ...}``) and checks them all in one call, :func:`flags`, which
accepts the usual words and rejects anything else naming the option; everything else reads the checked value as
``@flags.resume``.

A workflow that fails ends with one line naming the file or option and the problem (``error: ...``), not a traceback
from deep inside MONAI; ``--debug true`` (or ``HERMES_DEBUG=1``) shows the traceback as well. The hook is installed
by what a user runs (the first ``initialize`` step of every workflow config, :func:`run_command` for the
``python -m scripts....`` commands), never by importing the package: a notebook, MONAI Label or the Model Zoo's
verifier importing ``scripts.networks`` keeps its own tracebacks.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .errors import SetupError, hermes_error_in, one_line

TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off", "f", "none", ""})

_state = {"debug": False, "installed": False}


def flag(value: Any, name: str) -> bool:
    """``value`` of the switch ``--name`` as a bool; anything but a bool, 0/1 or a yes/no word is a ``SetupError``."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SetupError(f"--{name}: expected true or false, got {value!r}")


class Flags(dict):
    """A workflow's checked switches; configs read them as ``@flags.NAME`` (never the raw ``@NAME``)."""

    def __getattr__(self, name: str) -> bool:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no switch named {name!r}; this workflow's switches: {sorted(self)}") from None


def flags(**switches: Any) -> Flags:
    """Every switch of a workflow checked in one call (``"flags": "$scripts.cli.flags(**@switches)"``, the first
    ``initialize`` step after the error report), so a bad word stops the run before any work starts. ``debug`` takes
    effect first, so a bad word in another switch shows its traceback under ``--debug true``."""
    if "debug" in switches:
        set_debug(switches["debug"])
    return Flags({name: flag(value, name) for name, value in switches.items()})


class _WithoutTraceback(logging.Filter):
    """Drops the traceback MONAI's and ignite's handlers attach to their error records, unless debugging."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not debugging():
            record.exc_info, record.exc_text = None, None
        return True


def set_debug(value: Any) -> bool:
    """``--debug true``: failures print their traceback before the one-line summary (also in logged errors)."""
    _state["debug"] = flag(value, "debug")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _WithoutTraceback) for f in handler.filters):
            handler.addFilter(_WithoutTraceback())
    return _state["debug"]


def debugging() -> bool:
    return bool(_state["debug"]) or os.environ.get("HERMES_DEBUG", "").strip().lower() in TRUE_WORDS


def probability(value: Any, name: str) -> float:
    """``value`` of ``--name`` as a number strictly between 0 and 1 (a threshold on probabilities: 0 labels
    everything, 1 or more labels nothing); anything else is a ``SetupError``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 < number < 1.0:
        raise SetupError(f"--{name}: expected a probability between 0 and 1 (exclusive), got {value!r}")
    return number


def required_setting(name: str, what: str) -> Any:
    """Stand-in for a config value the user must give (``--name VALUE``): fails with a message naming it."""
    raise SetupError(f"this configuration needs --{name}: {what}")


def report(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook``: the traceback only when debugging, and always the one-line reason last."""
    if debugging():
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return
    ours = hermes_error_in(exc)
    if ours is not None and not debugging():  # the lines after the first (every problem of a datalist) come first
        for line in str(ours).strip().splitlines()[1:]:
            print(line, file=sys.stderr)
    hint = "" if ours is not None or debugging() else " (run with --debug true for the traceback)"
    print(f"error: {one_line(exc)}{hint}", file=sys.stderr, flush=True)


def install_error_report() -> None:
    """Make :func:`report` the interpreter's handler of uncaught exceptions (once per process)."""
    if not _state["installed"]:
        sys.excepthook = report
        _state["installed"] = True


def run_command(main: Callable[[], int]) -> None:
    """``python -m scripts.<command>``: failures of ``main`` end in one line, and its return value is the exit code."""
    install_error_report()
    sys.exit(main())


def warn(text: str) -> None:
    """A warning a person should read during a run (stderr, one line)."""
    print(f"warning: {text}", file=sys.stderr, flush=True)
