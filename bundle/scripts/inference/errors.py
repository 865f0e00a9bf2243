"""User-facing errors of the inference workflow: one line that names the file and the problem."""

from __future__ import annotations


class CaseError(Exception):
    """A problem with one input case; the batch reports it and goes on with the other cases."""


class SetupError(ValueError):
    """A problem that stops the whole run before any case (no weights, unknown task or modality name)."""


def error_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (MONAI wraps a failing transform's error in its own)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def one_line(err: BaseException) -> str:
    """The message a person should read: our own errors as they are, others as ``Type: first line`` of the root cause."""
    chain = error_chain(err)
    for item in chain:
        if isinstance(item, (CaseError, SetupError)):
            return _first_line(item)
    root = chain[-1]
    return f"{type(root).__name__}: {_first_line(root)}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
