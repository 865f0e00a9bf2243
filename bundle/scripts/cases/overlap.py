"""Background reading and writing around the device's work: while the network predicts case k, case k+1..k+N are
read (and resampled) and case k-1 is written by ``N`` worker threads. Threads, not processes: reading, gzip, NumPy
and torch release the interpreter lock, and a read case (a tensor on the GPU, possibly) need not be copied between
processes. With ``workers`` 0 everything runs in the calling thread, in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import SetupError


class Overlap:
    """Read-ahead of a fixed sequence of items and write-behind of their results."""

    def __init__(self, workers: int = 0) -> None:
        if int(workers) < 0:
            raise SetupError(f"--workers: expected 0 or more, got {workers}")
        self.workers = int(workers)
        self._readers: ThreadPoolExecutor | None = None
        self._writers: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[int, Future]] = deque()
        self._items: list[Any] = []
        self._read: Callable[[Any], Any] | None = None
        self._next = 0

    def start(self, items: Sequence[Any], read: Callable[[Any], Any]) -> None:
        """Begin reading ``items`` ahead (in order)."""
        self.close()
        self._items, self._read, self._next = list(items), read, 0
        if self.workers:
            self._readers = ThreadPoolExecutor(self.workers, thread_name_prefix="hermes-read")
            self._writers = ThreadPoolExecutor(self.workers, thread_name_prefix="hermes-write")
            for _ in range(self.workers):
                self._submit_next()

    def _submit_next(self) -> None:
        if self._readers is not None and self._next < len(self._items):
            index = self._next
            self._pending.append((index, self._readers.submit(self._read, self._items[index])))
            self._next += 1

    def take(self, item: Any) -> Any:
        """The read of ``item`` (the next one in order); raises what reading it raised."""
        if self._readers is None:
            assert self._read is not None
            return self._read(item)
        index, future = self._pending.popleft()
        if self._items[index] is not item:
            raise RuntimeError("cases were taken out of order")  # a programming error, never a user's input
        self._submit_next()
        return future.result()

    def later(self, work: Callable[[], str]) -> str | Future:
        """Run ``work`` in a writer thread (returns its future) or now (returns its result)."""
        if self._writers is None:
            return work()
        return self._writers.submit(work)

    def close(self) -> None:
        """Wait for the writes in flight, drop reads not taken (an interrupted run)."""
        for pool in (self._readers, self._writers):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._readers = self._writers = None
        self._pending.clear()
