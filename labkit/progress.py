"""A progress bar whose saved notebook output shows the finished bar.

Why not ``tqdm.auto``? In Jupyter it draws an ipywidget; a notebook viewer
without the live kernel (GitHub, nbviewer, a committed notebook opened
later) cannot draw widgets and falls back to the widget's text from the
moment it was *created*: ``fp32:   0%|          | 0/50``. A learner reading
the committed lab then sees every loop stuck at zero.

`progress` keeps tqdm's interface (``update``, ``set_postfix``, ``close``,
iteration) and its text (``tqdm.format_meter``), but in a notebook it
prints through one updatable display (``display(..., display_id=True)``),
so the stored output is the last state: ``fp32: 100%|##########| 50/50
[00:05<00:00, 9.8it/s, loss=1.23]``. In a terminal it is plain tqdm.

In the labs: every training loop that shows progress (through `labkit.train`).
"""
from __future__ import annotations

import time


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class _Text:
    """A display object that is just one line of text."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class NotebookBar:
    """tqdm's interface, drawn as one line of text that is updated in place."""

    def __init__(self, iterable=None, total=None, desc: str = "", leave: bool = True, disable: bool = False,
                 mininterval: float = 0.5, **_):
        from IPython.display import display

        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.leave, self.disable, self.mininterval = desc, leave, disable, mininterval
        self.n, self.postfix, self.start, self._last = 0, "", time.time(), 0.0
        self.closed = False
        self._handle = None if disable else display(_Text(self._text()), display_id=True)

    def _text(self) -> str:
        from tqdm import tqdm

        return tqdm.format_meter(self.n, self.total, time.time() - self.start, prefix=self.desc,
                                 postfix=self.postfix or None, ascii=" #", ncols=None)

    def _draw(self, force: bool = False) -> None:
        now = time.time()
        if self._handle is not None and (force or now - self._last >= self.mininterval):
            self._handle.update(_Text(self._text()))
            self._last = now

    def update(self, n: int = 1) -> None:
        self.n += n
        self._draw()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())
        if refresh:
            self._draw()

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc
        if refresh:
            self._draw()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._handle is None:
            return
        if self.leave:
            self._draw(force=True)
        else:
            self._handle.update(_Text(""))

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(iterable=None, total=None, desc: str = "", leave: bool = True, disable: bool = False, **kwargs):
    """``tqdm(...)`` for the labs: a finished bar in saved notebooks, plain tqdm in a terminal.

    ``leave=False`` bars vanish when done in a terminal; in a notebook they are kept too (a stored
    output that says what ran, and how fast, is worth one line).
    """
    if _in_notebook():
        return NotebookBar(iterable, total=total, desc=desc, leave=True, disable=disable, **kwargs)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=leave, disable=disable, **kwargs)
