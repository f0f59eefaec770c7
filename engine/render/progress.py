"""Progress of long work on stderr: a bar on a terminal; elsewhere (logs, CI, `| tee`) a plain line every
`interval` seconds from a timer (so a slow first step is not silent either), and a closing line when any was
written. Work done within one interval writes nothing, so quick commands and their error sentences stay clean."""
from __future__ import annotations

import os
import sys
import threading
import time

# seconds between plain lines when stderr is not a terminal; the environment variable lets a test shorten it
PLAIN_INTERVAL = float(os.environ.get("CONVLENS_PROGRESS_INTERVAL", "10"))


class Progress:
    """`with Progress(total, "filters", quiet) as p: ... p.advance(n)`; nothing is written when quiet."""

    def __init__(self, total: int, what: str, quiet: bool = False, interval: float | None = None, stream=None):
        self.total, self.what, self.done = total, what, 0
        self.show = not quiet and total > 0
        self._own_stream = stream is None and self.show
        # a copy of the terminal's stderr taken now: framework chatter is silenced later by pointing file
        # descriptor 2 elsewhere (converters/quiet.py), and progress must still get through
        self.stream = _stderr_copy() if self._own_stream else (stream or sys.stderr)
        self.interval = PLAIN_INTERVAL if interval is None else interval
        self.start = time.perf_counter()
        self.terminal = _is_terminal(self.stream)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer = None
        self._lines = 0  # plain lines written so far

    def __enter__(self) -> "Progress":
        if self.show and self.terminal:
            self.advance(0)
        if self.show and not self.terminal:
            self._timer = threading.Thread(target=self._tick, daemon=True)
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        if self.show and self.terminal and self.done < self.total:
            self.stream.write("\n")  # whatever is said next (an error) starts on its own line
            self.stream.flush()
        if self._lines and exc[0] is None:
            self._write_line(f"{self.what}: {self.done}/{self.total} done in {self._elapsed():.0f} s")
        if self._own_stream and self.stream is not sys.stderr:
            self.stream.close()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done = min(self.done + n, self.total)
        if self.show and self.terminal:
            filled = int(30 * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {self.what}"
                              f"{self._left()} ")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                done = self.done
            self._write_line(f"{self.what}: {done}/{self.total} done, {self.total - done} left"
                             f"{self._left()}, {self._elapsed():.0f} s so far")

    def _left(self) -> str:
        elapsed = self._elapsed()
        if self.done == 0 or elapsed <= 0 or self.done >= self.total:
            return ""
        return f", about {(self.total - self.done) * elapsed / self.done:.0f} s left"

    def _elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _write_line(self, text: str) -> None:
        with self._lock:
            self._lines += 1
            self.stream.write(text + "\n")
            self.stream.flush()


def _stderr_copy():
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, ValueError, OSError):  # no real stderr (a test runner's capture, a notebook)
        return sys.stderr


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
