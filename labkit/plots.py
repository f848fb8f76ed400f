"""One matplotlib style for every lab, and the few plot helpers they share.

Figures are saved into notebooks at 110 DPI (readable, and each notebook stays
under 1 MB); colours are fixed per idea so "bf16" or "LoRA" look the same in every lab.

In the labs: every figure, from lab 00 §1 on.
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,   # readable on GitHub and in print; notebooks still stay under 1 MB
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
}
GB = 1e9


def use_style() -> None:
    """Apply the lab style (call once at the top of a notebook)."""
    mpl.rcParams.update(STYLE)


def loss_curves(histories: dict, ax=None, title: str = "training loss", eval_too: bool = True):
    """Plot training (and eval) loss of several `labkit.train.History` objects, one colour each."""
    if ax is None:
        _, ax = plt.subplots()
    for i, (label, h) in enumerate(histories.items()):
        color = PALETTE[i % len(PALETTE)]
        ax.plot(h.step, h.loss, color=color, alpha=0.8, lw=1.2, label=f"{label} (train)")
        if eval_too and h.eval_step:
            ax.plot(h.eval_step, h.eval_loss, "o--", color=color, ms=4, lw=1, label=f"{label} (eval)")
    ax.set(xlabel="optimizer step", ylabel="cross-entropy loss (nats/token)", title=title)
    ax.legend()
    return ax


def stacked_bars(labels: list[str], parts: dict[str, list[float]], ax=None, ylabel: str = "GB",
                 title: str = "", hlines: dict[str, float] | None = None):
    """Stacked bars (e.g. memory terms per configuration) with optional horizontal limits
    (e.g. ``{"A100 40GB": 40}``)."""
    if ax is None:
        _, ax = plt.subplots()
    bottom = [0.0] * len(labels)
    for i, (name, values) in enumerate(parts.items()):
        ax.bar(labels, values, bottom=bottom, label=name, color=PALETTE[i % len(PALETTE)])
        bottom = [b + v for b, v in zip(bottom, values)]
    for j, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls="--", lw=1, color="k", alpha=0.5)
        ax.text(len(labels) - 0.5, y, f" {name}", va="bottom", ha="right", fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(loc="upper left")
    ax.tick_params(axis="x", rotation=20)
    return ax


def table(rows: list[dict], floatfmt: str = ".3g") -> str:
    """A small Markdown table from a list of dicts (first row's keys are the columns)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def fmt(v):
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _text_box(text, renderer):
    """The window extent of a label's text alone (an Annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    if hasattr(text, "update_positions"):  # an Annotation places its text only when asked (or drawn)
        text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def label_points(ax, xs, ys, labels, fontsize: float = 7, max_tries: int = 40) -> list:
    """Annotate scatter points so that no two labels overlap.

    Each label tries positions near its point -- right, then left, then a line lower
    or higher on either side, and so on -- and takes the first one that overlaps no
    label already placed and stays inside the axes; a displaced label gets a thin
    leader line to its point. A plain greedy placer, enough for the dozen points of
    a lab plot (the forgetting frontier of lab 06).
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed, texts = [], []
    for i in sorted(range(len(labels)), key=lambda j: (-ys[j], xs[j])):
        step = None
        for attempt in range(max_tries):
            k = (attempt // 2 + 1) // 2 * (1 if (attempt // 2) % 2 == 0 else -1)  # 0, 0, -1, -1, +1, +1, -2, ...
            right = attempt % 2 == 0
            dy = 3 + (k * step if step else 0)
            text = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(4 if right else -4, dy),
                               textcoords="offset points", fontsize=fontsize, va="bottom",
                               ha="left" if right else "right",
                               arrowprops=None if k == 0 else dict(arrowstyle="-", lw=0.5, color="0.5"))
            box = _text_box(text, renderer)
            step = step or box.height * 72 / fig.dpi + 1
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                placed.append(box)
                texts.append(text)
                break
            text.remove()
        else:  # crowded beyond help: keep the first position rather than drop the label
            texts.append(ax.annotate(labels[i], (xs[i], ys[i]), xytext=(4, 3), textcoords="offset points",
                                     fontsize=fontsize))
    return texts
