"""``python -m labkit sft``: show which tokens of a committed dialogue carry the SFT loss.

The command-line face of lab 09 §3: format one of the committed dialogues (`formats.format_example`,
chat or base template, every turn or the last only) and print it with the trained tokens in [brackets]
(`render.render_text`), or as JSON. `labkit/__main__.py` reaches it as ``labkit.sft:main``.
"""
from __future__ import annotations

from ..errors import LabkitError
from .formats import IGNORE, TEMPLATES, format_example
from .render import render_text

__all__ = ["main"]


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    from .. import cli, data
    from ..tokenizer import load_tokenizer

    p = cli.parser("sft", "Show which tokens of a committed dialogue carry the SFT loss (lab 09).", profile=False)
    p.add_argument("--example", type=int, default=0, help="index into the dialogues file (default 0)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--template", choices=TEMPLATES, default="chat")
    p.add_argument("--last-turn-only", action="store_true", help="train only the final assistant turn")
    args = p.parse_args(argv)
    items = data.load("dialogues", args.split)
    if not 0 <= args.example < len(items):
        raise LabkitError(f"--example must be in 0..{len(items) - 1} for the {args.split} dialogues")
    tok = load_tokenizer()
    row = format_example(items[args.example], tok, args.template, last_turn_only=args.last_turn_only)
    n_loss = sum(lab != IGNORE for lab in row["labels"])
    if args.json:
        cli.emit_json({"example": args.example, "split": args.split, "template": args.template,
                       "last_turn_only": args.last_turn_only, "turns": len(items[args.example]["history"]) + 1,
                       "n_tokens": len(row["input_ids"]), "n_loss_tokens": n_loss,
                       "rendered": render_text(row, tok)})
    else:
        print(render_text(row, tok))
        print(f"\n{len(row['input_ids'])} tokens, {n_loss} carry loss (in [brackets])")
    return 0
