"""A few daemon threads working through a queue of one-off tasks: the bounded parallelism of start-up.

With hundreds of databases, a thread per database at start (migrate, take leadership, first probe, start-up
round) means hundreds of threads racing for a server's connections at once. Here at most `workers` of those
tasks run at a time, in the order they came. The threads are daemon threads (a task stuck on an unreachable
server never holds up the process's exit) and a stop drops what has not started yet.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Task = tuple[Callable[..., object], tuple[object, ...], str]


class WorkQueue:
    """Run submitted tasks on at most `workers` threads; each task is a fault boundary of its own."""

    def __init__(self, workers: int, name: str = "work") -> None:
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._closed = threading.Event()
        self._busy = 0
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    def submit(self, func: Callable[..., object], label: str, *args: object) -> None:
        if self._closed.is_set():
            return
        with self._cond:
            self._busy += 1
        self._tasks.put((func, args, label))

    def _loop(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            func, args, label = task
            try:
                if not self._closed.is_set():
                    func(*args)
            except Exception:  # the task's own fault boundary failed: say so, keep the worker
                log.exception("%s failed", label)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def pending(self) -> int:
        """Tasks submitted and not finished (queued or running)."""
        with self._cond:
            return self._busy

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Start nothing more: queued tasks are dropped, running ones finish on their own."""
        self._closed.set()
        for _ in self._threads:
            self._tasks.put(None)
