"""The generic daemon lifecycle: start, loop, reload, stop. Signal handlers only record what arrived
(threading.Event flags); the main loop acts on them, waiting on an Event so a stop takes effect at once.
What the daemon actually does lives in `app.IndexdService`.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Protocol

from indexd.errors import IndexdError
from indexd.service.systemd import Notifier

log = logging.getLogger(__name__)


class Service(Protocol):
    def start(self) -> None: ...
    def tick(self) -> None: ...
    def wait_hint(self) -> float: ...
    def reload(self) -> bool: ...
    def stop(self) -> None: ...
    def status_line(self) -> str: ...


class Daemon:
    def __init__(self, service: Service, notifier: Notifier) -> None:
        self.service = service
        self.notifier = notifier
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self._wake = threading.Event()

    # ---- signals: record, wake the loop, nothing else --------------------------------------------------------
    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.stop_requested.set()
        self._wake.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.reload_requested.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def request_stop(self) -> None:
        self._on_stop(signal.SIGTERM, None)

    def request_reload(self) -> None:
        self._on_reload(signal.SIGHUP, None)

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Start, loop until asked to stop, stop. Returns the process exit code."""
        self.install_signal_handlers()
        log.info("indexd starting")
        try:
            self.service.start()
        except IndexdError as exc:
            log.error("indexd could not start: %s", exc)
            self._stop_service()
            return exc.exit_code
        except Exception:
            log.critical("indexd crashed while starting", exc_info=True)
            self._stop_service()
            return 1
        self.notifier.ready(f"running: {self.service.status_line()}")
        try:
            self._loop()
        except Exception:
            log.critical("indexd crashed in its main loop", exc_info=True)
            self._stop_service()
            return 1
        self._stop_service()
        return 0

    def _loop(self) -> None:
        while not self.stop_requested.is_set():
            self.service.tick()
            self._wake.wait(self.service.wait_hint())
            self._wake.clear()
            if self.reload_requested.is_set() and not self.stop_requested.is_set():
                self.reload_requested.clear()
                self._reload()
        log.info("indexd stopping (stop requested)")

    def _reload(self) -> None:
        self.notifier.reloading()
        log.info("reloading the configuration")
        ok = self.service.reload()
        state = "running" if ok else "running (reload refused, old configuration kept)"
        self.notifier.ready(f"{state}: {self.service.status_line()}")

    def _stop_service(self) -> None:
        self.notifier.stopping()
        try:
            self.service.stop()
        except Exception:
            log.critical("indexd failed while stopping", exc_info=True)
