"""Garbage collection in small, regular steps, so that no collection holds the loop for long.

CPython 3.11 starts a young collection when the container objects allocated outnumber those freed
by a threshold. A poller that replaces every account's snapshot frees about as much as it
allocates, so that count hardly moves while the young generation fills up with the new snapshots;
collections then come seldom and walk hundreds of thousands of objects at once (150-250 ms at
10,000 accounts, see docs/benchmarks.md). The pacer takes over from the automatic collector:

- every ``period`` it collects the young generation, which holds only what the last period left
  alive (milliseconds of work);
- every ``middle_every``-th time, the middle generation too;
- after a middle collection, the whole heap if the oldest generation has grown by a quarter
  since the last full collection (CPython's own rule). Snapshots replace each other, so in a
  steady state it does not grow, and a full collection is rare.

What is alive when it starts (modules, the configuration, the first snapshots) is frozen: never
walked again. Cyclic garbage is still found (at the latest by the next full collection), so
nothing leaks; it is only found in smaller steps.
"""

from __future__ import annotations

import asyncio
import gc

# Seconds between young collections. Each one walks the objects of the requests under way
# (about 20,000 during a 10,000-account cycle, whatever the period) besides what the period left
# alive: 0.25 s collected twice as often for the same pauses; at 0.5 s a young collection took
# 6-22 ms and a middle or full one at most 30 ms (docs/benchmarks.md).
PERIOD = 0.5
MIDDLE_EVERY = 4  # young collections per middle collection: one every 2 s
FULL_GROWTH = 1.25  # a full collection once the oldest generation has grown by this factor


class GcPacer:
    """Runs the collector on a timer (``run``) instead of on allocation counts."""

    def __init__(
        self,
        *,
        period: float = PERIOD,
        middle_every: int = MIDDLE_EVERY,
        full_growth: float = FULL_GROWTH,
    ) -> None:
        self.period = period
        self.middle_every = middle_every
        self.full_growth = full_growth
        self.collections = [0, 0, 0]  # how many of each generation so far
        self._ticks = 0
        self._old_size = 0  # the oldest generation's size after the last full collection

    def step(self) -> int:
        """One scheduled collection; returns the generation collected."""
        self._ticks += 1
        generation = 1 if self._ticks % self.middle_every == 0 else 0
        if generation == 1 and self._old_grew():
            generation = 2
        gc.collect(generation)
        if generation == 2:
            self._old_size = len(gc.get_objects(2))
        self.collections[generation] += 1
        return generation

    def _old_grew(self) -> bool:
        return len(gc.get_objects(2)) > max(self._old_size, 1000) * self.full_growth

    @staticmethod
    def freeze() -> None:
        """Collect once, then exempt everything alive from later collections (at start-up).

        A full collection of the start-up heap takes tens of milliseconds at 10,000 accounts:
        call this before serving, not from the running loop.
        """
        gc.collect()
        gc.freeze()

    async def run(self) -> None:
        """Collect on the timer until cancelled.

        The automatic collector is off meanwhile, and on again when this ends.
        """
        gc.disable()
        try:
            while True:
                await asyncio.sleep(self.period)
                self.step()
        finally:
            gc.enable()
