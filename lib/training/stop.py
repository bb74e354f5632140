"""SIGTERM / SIGUSR1 as a request to checkpoint and stop, not the end of the process.

Its own module, importing nothing heavy: ``python -m lib train`` enters it before torch and
transformers load (~9 s on an idle 2-core node, far longer on a busy one), so SLURM's warning signal
arriving during the imports is kept for the first step instead of killing the rank (the signals'
default action), which would leave the job without a checkpoint.
"""

from __future__ import annotations

import signal


class StopFlag:
    """Turns SIGTERM/SIGUSR1 into a flag the loop checks after each step; the previous handlers come
    back on exit."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self.old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGUSR1)}
        return self

    def _set(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
