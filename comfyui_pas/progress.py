"""Progress of a job counted in model calls: callback(done, total), the total known before the job starts."""
from __future__ import annotations


class Progress:
    """Counts model calls (rows) towards `total` and reports callback(done, total); None reports nothing.

    phase(offset) gives the callback of a sub-job that reports its own (done, total): it lands at
    offset + done here, so one bar covers consecutive jobs.
    """

    def __init__(self, callback, total: int):
        self.callback, self.total, self.done = callback, max(1, int(total)), 0

    def __call__(self, rows: int) -> None:
        self.report(self.done + rows)

    def report(self, done: int) -> None:
        self.done = min(self.total, int(done))
        if self.callback:
            self.callback(self.done, self.total)

    def finish(self) -> None:
        """The end of the job: a bound on the calls (held-out roll-outs) may not all be spent."""
        self.report(self.total)

    def phase(self, offset: int):
        return lambda done, _total: self.report(offset + done)
