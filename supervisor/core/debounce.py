"""Debounce with a minimum and a maximum window, latest wins. Pure: the caller passes the clock.

A change marks the debouncer dirty. A reconcile is due once `min_wait` has passed since the last change (the burst
went quiet) or `max_wait` since the first unhandled change (a steady stream cannot starve the reconcile).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Debouncer:
    min_wait: float
    max_wait: float
    first_change: float | None = None
    last_change: float | None = None

    def mark(self, now: float) -> None:
        if self.first_change is None:
            self.first_change = now
        self.last_change = now

    def deadline(self) -> float | None:
        """When the pending change becomes due, or None when nothing is pending."""
        if self.first_change is None or self.last_change is None:
            return None
        return min(self.last_change + self.min_wait, self.first_change + self.max_wait)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def clear(self) -> None:
        self.first_change = None
        self.last_change = None


_MAX_EXPONENT = 1023


def restart_delay(consecutive_failures: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before restarting a crashed keepalived: 0 the first time, then doubling up to `cap`."""
    if consecutive_failures <= 1:
        return 0.0
    # Cap the exponent before raising 2 to it: 2 ** n for a large n would be a huge int that no float can hold
    # (OverflowError) and takes ever longer to compute. 2.0 ** 1023 is still a float, and base times it exceeds any
    # cap of practical use; beyond, the float product overflows to inf (no error), which min() turns into `cap`.
    exponent = min(consecutive_failures - 2, _MAX_EXPONENT)
    return float(min(cap, base * 2.0**exponent))
