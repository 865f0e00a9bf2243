"""Command-line switches as booleans: ``monai.bundle run`` passes ``--overwrite true`` on as the string "true"."""

from __future__ import annotations

from typing import Any

from .errors import SetupError

TRUE = {"1", "true", "yes", "on", "y", "t"}
FALSE = {"0", "false", "no", "off", "n", "f", "", "none"}


def as_flag(value: Any, name: str = "option") -> bool:
    """``True``/``False`` from a bool, a number or the usual words; anything else is an error naming the option."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int, float)):
        return value != 0
    word = str(value).strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise SetupError(f"--{name}: expected true or false, got {value!r}")
