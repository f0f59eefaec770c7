"""A progress line for long runs: done/total, images per second, time left (stderr, terminals only)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, what: str = "images", quiet: bool = False):
        self.total, self.what, self.done = total, what, 0
        self.start = time.perf_counter()
        self.show = not quiet and sys.stderr.isatty() and total > 0

    def advance(self, n: int) -> None:
        self.done += n
        if not self.show:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        filled = int(30 * self.done / self.total)
        sys.stderr.write(f"\revaluate [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {self.what}, "
                         f"{rate:.2f} {self.what}/s, {left:.0f} s left ")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()
