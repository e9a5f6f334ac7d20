"""Peak resident memory of this process, sampled by a background thread.

DuckDB allocates outside Python's view, so the resident set size (RSS) of the process is what counts. A thread
reads it every few milliseconds; `peak()` gives the highest value seen since the last `reset()`.
"""

from __future__ import annotations

import os
import resource
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident bytes of this process now (Linux /proc; elsewhere the lifetime peak)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        return lifetime_peak_rss()


def lifetime_peak_rss() -> int:
    """The highest RSS this process ever had (getrusage; kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """A daemon thread that keeps the highest RSS seen since the last reset."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = current_rss()
            with self._lock:
                self._peak = max(self._peak, rss)
            time.sleep(self.interval)

    def reset(self) -> None:
        with self._lock:
            self._peak = current_rss()

    def peak(self) -> int:
        with self._lock:
            return max(self._peak, current_rss())
