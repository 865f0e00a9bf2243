"""User-facing errors of the inference workflow: one line that names the file and the problem."""

from __future__ import annotations


class CaseError(Exception):
    """A problem with one input case; the batch reports it and goes on with the other cases."""


class SetupError(Exception):
    """A problem that stops the whole run before any case (no weights, unknown task or modality name)."""


def one_line(err: BaseException) -> str:
    """The message a person should read: our own errors as they are, others as ``Type: first line`` of the root cause."""
    chain = [err]
    while chain[-1].__cause__ is not None or (chain[-1].__context__ is not None and not chain[-1].__suppress_context__):
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt in chain:
            break
        chain.append(nxt)
    for item in chain:
        if isinstance(item, (CaseError, SetupError)):
            return _first_line(item)
    root = chain[-1]
    return f"{type(root).__name__}: {_first_line(root)}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
