"""One error type for every mistake a learner can make.

A learner who types an unknown model name or asks for a GPU on a laptop should
read one line that says what is wrong and what to do -- not forty lines of
traceback from deep inside torch. `LabkitError` carries that line:

* the CLI (`python -m labkit ...`) prints it and exits with code 2;
* in Jupyter, `_render_traceback_` makes IPython show just the message.

In the labs: every bad argument a learner can pass to labkit, from lab 00 on; lab 05 §9 raises it
from code the learner writes.
"""


class LabkitError(ValueError):
    """A bad input or an impossible request, explained in one line."""

    def _render_traceback_(self):  # IPython hook: show one line, not a traceback
        return [f"\x1b[31mLabkitError\x1b[0m: {self}"]


def require(condition: bool, message: str) -> None:
    """Raise `LabkitError(message)` unless `condition` holds."""
    if not condition:
        raise LabkitError(message)
