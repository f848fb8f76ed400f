"""Showing which tokens carry the SFT loss: trained tokens in [brackets] or on green.

Why a module of its own: lab 09 §3 looks at every formatted example this way before training on it
(the loss mask is the easiest thing in SFT to get silently wrong), and ``python -m labkit sft``
(`command`) prints `render_text` of a committed dialogue.
"""
from __future__ import annotations

from .formats import IGNORE

__all__ = ["render_text", "render_html"]


# ---------------------------------------------------------------------------
# Showing which tokens carry loss; generation with a chosen template
# ---------------------------------------------------------------------------
def _pieces(ids, tokenizer) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def render_text(row: dict, tokenizer) -> str:
    """The sequence with every trained token in [brackets]."""
    return "".join(f"[{p}]" if lab != IGNORE else p
                   for p, lab in zip(_pieces(row["input_ids"], tokenizer), row["labels"]))


def render_html(row: dict, tokenizer) -> str:
    """HTML: trained tokens on green, the rest grey; token boundaries visible."""
    import html

    out = []
    for p, lab in zip(_pieces(row["input_ids"], tokenizer), row["labels"]):
        style = "background:#c7e9c0;color:#000" if lab != IGNORE else "background:#eee;color:#888"
        text = html.escape(p).replace("\n", "&#8629;<br>")
        out.append(f'<span style="{style};border:1px solid #fff;font-family:monospace">{text}</span>')
    return "<div style='line-height:1.9'>" + "".join(out) + "</div>"
