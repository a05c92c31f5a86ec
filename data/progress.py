"""A progress line for the commands (statistics, staging, synthesis, prediction)."""

import sys
import time


class Progress:
    """Prints `what: done/total files, size, rate` at most every `interval` seconds.

    Args:
        total: number of items expected.
        what: label at the start of the line, e.g. `"climseg-stage"`.
        enabled: print nothing when False (e.g. on every rank but one).
        stream: where to print. Defaults to `sys.stderr`.
        interval: seconds between lines. Defaults to `2.0`.
        unit: what the items are. Defaults to `"files"`.
        rate: add the items per second and the time left. Defaults to False.
        scale: items counted per item updated, e.g. ranks / 1 when one rank
            reports for all (`total / its own share`). Defaults to `1`.
    """

    def __init__(self, total, what, *, enabled=True, stream=None, interval=2.0, unit="files",
                 rate=False, scale=1):
        self.total = total
        self.what = what
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.interval = interval
        self.unit = unit
        self.rate = rate
        self.scale = scale
        self.done = 0
        self.nbytes = 0
        self._start = time.perf_counter()
        self._last = -float("inf")
        self._printed_at = None

    def update(self, items=1, nbytes=0):
        """Counts `items` more done (and `nbytes` processed); prints if due."""
        self.done = min(self.done + items * self.scale, self.total)
        self.nbytes += nbytes
        now = time.perf_counter()
        if now - self._last >= self.interval or self.done == self.total:
            self._print(now)

    def close(self):
        """Prints the final line (all done), unless the last update printed it or there
        was nothing to do."""
        self.done = self.total
        if self.total and self._printed_at != self.done:
            self._print(time.perf_counter())

    def _print(self, now):
        self._last = now
        self._printed_at = self.done
        if not self.enabled:
            return
        elapsed = max(now - self._start, 1e-9)
        line = f"{self.what}: {round(self.done)}/{self.total} {self.unit}"
        if self.nbytes:
            line += f", {self.nbytes / 1e6:.0f} MB, {self.nbytes / 1e6 / elapsed:.0f} MB/s"
        if self.rate:
            per_second = self.done / elapsed
            line += f", {per_second:.2f} {self.unit}/s"
            if self.done < self.total and per_second > 0:
                line += f", ETA {(self.total - self.done) / per_second:.0f} s"
        line += f", {elapsed:.1f} s"
        print(line, file=self.stream, flush=True)
