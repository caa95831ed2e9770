"""The events a pipeline reports while it runs, beside its plain progress lines.

A progress callback receives text; these two kinds of text carry what a listener may act on
(the CLI holds its lines back until a build's input checks have passed), typed instead of
recognised by their wording.
"""

from __future__ import annotations


class StepDone(str):
    """A step finished: "<step> done (<seconds>s)"."""


class Ready(str):
    """The input checks are over; the pipeline starts writing into `out`."""

    out: str

    def __new__(cls, out) -> "Ready":
        event = super().__new__(cls, f"checks passed; writing {out}")
        event.out = str(out)
        return event


__all__ = ["StepDone", "Ready"]
