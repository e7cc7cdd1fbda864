"""Live progress of long steps, as log lines a person can read: at the start, at most every
``PROGRESS_EVERY_S`` seconds while work is done, and at the end, with the rate and the time left.

Stage code logs to the ``docqa`` logger and imports no Prefect; the Prefect tasks forward those records
to the run's logger (``tasks.caching.forward_logs``), so the same lines reach the terminal, the Prefect
UI and a GPU worker's log. Called outside a run, the lines go wherever the caller's logging sends them.
"""

from __future__ import annotations

import logging
import time

PROGRESS_EVERY_S = 10.0
log = logging.getLogger("docqa.progress")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts ``total`` units of one step (``label``: "pretrain · steps") and reports them."""

    def __init__(
        self, label: str, total: int, unit: str, every_s: float = PROGRESS_EVERY_S, announce: bool = True
    ):
        """``announce=False``: silent unless the step lasts longer than ``every_s`` (one document's pages
        among many documents), then reported like any other."""
        self.label, self.total, self.unit, self.every_s = label, max(total, 0), unit, every_s
        self.done = 0
        self.started = self.reported = time.monotonic()
        self.spoke = announce
        if announce:
            log.info("%s: %d %s to go", label, self.total, unit)

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self.reported >= self.every_s and self.done < self.total:
            self.reported, self.spoke = now, True
            log.info("%s", self.line(now, note))

    def update(self, done: int, note: str = "") -> None:
        """Set the count to ``done`` (reports from another process)."""
        self.advance(done - self.done, note)

    def line(self, now: float, note: str = "") -> str:
        elapsed = now - self.started
        share = self.done / self.total if self.total else 1.0
        left = f", about {_duration(elapsed / share - elapsed)} left" if 0 < share < 1 else ""
        extra = f", {note}" if note else ""
        return (
            f"{self.label}: {self.done}/{self.total} {self.unit} ({share:.0%}), {_duration(elapsed)}{left}"
            f"{extra}"
        )

    def close(self, note: str = "") -> None:
        if not self.spoke:
            return
        elapsed = time.monotonic() - self.started
        rate = f", {self.done / elapsed:.2f} {self.unit}/s" if elapsed > 0 and self.done else ""
        log.info("%s: %d %s done in %s%s%s", self.label, self.done, self.unit, _duration(elapsed), rate,
                 f", {note}" if note else "")  # fmt: skip
