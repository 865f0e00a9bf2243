"""The errors a user can act on. Each one is shown as a single line naming the file or option at fault.

Every workflow (training, inference, evaluation, the converter, the sample suite) raises these for bad input and bad
settings; ``scripts.cli`` turns any of them, however deep MONAI wrapped it, into that one line.
"""

from __future__ import annotations


class HermesError(Exception):
    """A problem with the user's input or settings, explained in the message's first line."""


class SetupError(HermesError, ValueError):
    """A problem that stops the whole run before any case (no weights, unknown task, a bad switch value)."""


class CaseError(HermesError):
    """A problem with one input case; a batch reports it and goes on with the other cases."""


def error_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (MONAI wraps a failing config expression in its own error)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def hermes_error_in(err: BaseException) -> HermesError | None:
    """The first of our own errors in ``err``'s chain, if any."""
    return next((item for item in error_chain(err) if isinstance(item, HermesError)), None)


def one_line(err: BaseException) -> str:
    """What a person should read: our own error's first line, else ``Type: first line`` of the root cause."""
    ours = hermes_error_in(err)
    if ours is not None:
        return first_line(ours)
    root = error_chain(err)[-1]
    return f"{type(root).__name__}: {first_line(root)}"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]  # KeyError's str() adds quotes around the message
    return text.splitlines()[0] if text else type(err).__name__
