"""The sample suite's one error type."""

from __future__ import annotations

from ..errors import HermesError


class SampleDataError(HermesError):
    """A sample source could not be fetched, verified or converted, or a folder is not ours to write into.

    The message names the package and registry, or the file, and says what to do.
    """
