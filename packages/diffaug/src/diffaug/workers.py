"""Worker processes for :func:`diffaug.balance_folder`: an order-keeping parallel ``map`` whose
workers end with the parent.

A process pool cannot tell its workers when the parent is killed (SIGTERM, SIGKILL): they would
wait for work forever. Each worker therefore watches its parent process id and exits when it
changes (the orphan was adopted by another process). Ctrl-C reaches the whole process group:
workers ignore it and the parent, interrupted, stops the pool.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

__all__ = ["process_map"]

_ORPHAN_POLL_SECONDS = 0.5


@contextmanager
def process_map(workers: int) -> Iterator[Callable[..., Iterable[Any]]]:
    """An order-keeping ``map`` over ``workers`` processes (the builtin ``map`` for one)."""
    if workers == 1:
        yield map
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker)

    def parallel_map(function: Callable[..., Any], *iterables: Iterable[Any]) -> Iterable[Any]:
        columns = [list(iterable) for iterable in iterables]
        chunksize = max(1, len(columns[0]) // (workers * 8))
        return pool.map(function, *columns, chunksize=chunksize)

    try:
        yield parallel_map
    finally:
        pool.shutdown(cancel_futures=True)


def _start_worker() -> None:
    """In each worker: Ctrl-C is the parent's to handle; exit when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    """Poll the parent process id: an orphan is adopted by another process."""
    while os.getppid() == parent:
        time.sleep(_ORPHAN_POLL_SECONDS)
    os._exit(1)  # no cleanup to run: an unfinished temporary file is removed by the rerun

