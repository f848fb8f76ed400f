"""SFT examples -> chat messages -> token ids + labels: the loss mask, the templates, truncation.

The heart of SFT data: `messages` reads a ``{"prompt", "response", "history"}`` example, `build_labels`
marks the assistant tokens (and their ``<|end|>``) as the only ones trained, `format_example` renders an
example with the ``"chat"`` or ``"base"`` template and truncates only where nothing is trained,
`format_dataset` skips and counts the examples it cannot format, `format_prompt` builds the prompt that
asks for the last answer, and `format_pretraining` cuts raw text into windows trained on every token.
Built in lab 09 §3 (the chat template and which tokens carry loss), §5 (continue-pretraining rows) and
§7 (the base, no-template format and `format_prompt`). Lab 10 §5 and lab 14 §8 call `format_prompt` /
`format_example`, and labs 04, 05 and 13 reach `format_example` through ``lora.instruction_batches``.
The other roles (`batches`, `render`, `generation`, `curation`) read
`IGNORE` and `TEMPLATES` from here.
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..errors import LabkitError

__all__ = ["IGNORE", "TEMPLATES", "messages", "format_example", "build_labels", "format_prompt",
           "format_dataset", "format_pretraining"]

IGNORE = -100
TEMPLATES = ("chat", "base")


# ---------------------------------------------------------------------------
# Examples -> messages -> token ids + labels
# ---------------------------------------------------------------------------
def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise LabkitError(f"{what} must be a string, got {type(value).__name__}")
    return value.strip()


def messages(example: dict) -> list[dict]:
    """The chat messages of a ``{"prompt", "response", "history"}`` example (whitespace-stripped).
    An optional ``"system"`` key becomes a system message."""
    if not isinstance(example, dict) or "prompt" not in example or "response" not in example:
        raise LabkitError('an SFT example is a dict with "prompt", "response" and optionally "history"')
    out = []
    if example.get("system"):
        out.append({"role": "system", "content": _text(example["system"], "system")})
    for turn in example.get("history") or []:
        if not isinstance(turn, (list, tuple)) or len(turn) != 2:
            raise LabkitError(f"each history turn is a [user, assistant] pair, got {turn!r}")
        out += [{"role": "user", "content": _text(turn[0], "a history user turn")},
                {"role": "assistant", "content": _text(turn[1], "a history assistant turn")}]
    out += [{"role": "user", "content": _text(example["prompt"], "prompt")},
            {"role": "assistant", "content": _text(example["response"], "response")}]
    return out


def _special(tokenizer, token: str) -> int:
    i = tokenizer.convert_tokens_to_ids(token)
    if i is None or i == tokenizer.unk_token_id:
        raise LabkitError(f"the tokenizer has no {token} token; use labkit.tokenizer.load_tokenizer()")
    return i


def _newline_id(tokenizer) -> int:
    ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise LabkitError("the tokenizer does not encode a newline as one token; build_labels needs it")
    return ids[0]


def build_labels(input_ids, tokenizer, *, last_turn_only: bool = False, attention_mask=None):
    """Labels for a chat-templated sequence: ``input_ids`` on assistant tokens, ``-100`` elsewhere.

    Works on the ids alone (no template re-rendering): an assistant turn starts after the
    ``<|assistant|>`` token and its newline, and ends *with* the next ``<|end|>`` (which is
    trained: the model must learn to stop). Everything else -- ``<|bos|>``, system and user
    turns, role markers, the newline after ``<|end|>``, positions where ``attention_mask`` is 0
    (padding) -- gets -100. A turn cut by truncation (no ``<|end|>``) is trained up to the cut.
    With ``last_turn_only`` only the last assistant turn is trained.
    Returns a list, or a tensor if ``input_ids`` is a tensor.
    """
    as_tensor = torch.is_tensor(input_ids)
    ids = input_ids.tolist() if as_tensor else list(input_ids)
    if ids and isinstance(ids[0], list):
        raise LabkitError("build_labels takes one sequence (1-D); call it per row")
    assistant, end = _special(tokenizer, "<|assistant|>"), _special(tokenizer, "<|end|>")
    newline = _newline_id(tokenizer)
    spans, i = [], 0
    while i < len(ids):
        if ids[i] == assistant:
            start = i + 1 + (i + 1 < len(ids) and ids[i + 1] == newline)  # skip the header newline
            stop = start
            while stop < len(ids) and ids[stop] != end:
                stop += 1
            stop = min(stop + 1, len(ids))  # include <|end|>
            spans.append((start, stop))
            i = stop
        else:
            i += 1
    if last_turn_only:
        spans = spans[-1:]
    labels = [IGNORE] * len(ids)
    for a, b in spans:
        labels[a:b] = ids[a:b]
    if attention_mask is not None:
        mask = attention_mask.tolist() if torch.is_tensor(attention_mask) else list(attention_mask)
        labels = [lab if m else IGNORE for lab, m in zip(labels, mask)]
    return torch.tensor(labels, dtype=torch.long) if as_tensor else labels


def _base_segments(msgs: list[dict]) -> list[tuple[str, bool]]:
    """The no-template ("base model") format: turns separated by newlines, no role markers.
    (text, trained) pieces; the answer is followed by eos, which is trained (the stop signal)."""
    segs = []
    for m in msgs:
        if m["role"] == "assistant":
            segs.append((m["content"], True))
            segs.append(("\n", False))
        else:
            segs.append((m["content"] + "\n", False))
    return segs[:-1]  # no newline after the final answer: eos follows


def _encode(example: dict, tokenizer, template: str, last_turn_only: bool) -> tuple[list[int], list[int]]:
    msgs = messages(example)
    assistant_turns = [m for m in msgs if m["role"] == "assistant"]
    trained = assistant_turns[-1:] if last_turn_only else assistant_turns
    if any(not m["content"] for m in trained):
        raise LabkitError("empty response: only the end-of-turn token would be trained (teaching the model "
                          "to answer nothing); drop the example (format_dataset(..., on_error='skip'))")
    if template == "chat":
        text = tokenizer.apply_chat_template(msgs, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, build_labels(ids, tokenizer, last_turn_only=last_turn_only)
    if template == "base":
        ids, labels = [tokenizer.bos_token_id], [IGNORE]
        segs = _base_segments(msgs)
        last_answer = max(i for i, (_, t) in enumerate(segs) if t)
        for i, (text, is_answer) in enumerate(segs):
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            train_it = is_answer and (not last_turn_only or i == last_answer)
            ids += piece
            labels += piece if train_it else [IGNORE] * len(piece)
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
        return ids, labels
    raise LabkitError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)} "
                      "(continue-pretraining text: format_pretraining)")


def format_example(example: dict, tokenizer, template: str = "chat", *, max_length: int | None = None,
                   last_turn_only: bool = False, truncation: str = "error") -> dict:
    """``{"input_ids", "attention_mask", "labels"}`` (lists) for one SFT example.

    ``template``: ``"chat"`` (the tokenizer's chat template) or ``"base"`` (no template: the turns
    as plain lines, then eos). ``max_length``: the example may be cut only where nothing is
    trained; if the cut would remove trained answer tokens, ``truncation="error"`` raises
    `LabkitError` and ``truncation="drop_history"`` first drops the oldest history turns.
    """
    if truncation not in ("error", "drop_history"):
        raise LabkitError(f"truncation must be 'error' or 'drop_history', got {truncation!r}")
    if max_length is not None and max_length < 2:
        raise LabkitError(f"max_length must be at least 2, got {max_length}")
    example = dict(example)
    while True:
        ids, labels = _encode(example, tokenizer, template, last_turn_only)
        if max_length is None or len(ids) <= max_length:
            break
        last_trained = max(i for i, lab in enumerate(labels) if lab != IGNORE)
        if last_trained < max_length:  # only untrained tail (e.g. the newline after <|end|>) is cut
            ids, labels = ids[:max_length], labels[:max_length]
            break
        if truncation == "drop_history" and example.get("history"):
            example["history"] = list(example["history"])[1:]
            continue
        raise LabkitError(f"example is {len(ids)} tokens; max_length={max_length} would cut the assistant's "
                          "answer (a model trained on it learns to stop mid-answer); raise max_length, use "
                          "truncation='drop_history', or skip it (format_dataset(..., on_error='skip'))")
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def format_prompt(example: dict, tokenizer, template: str = "chat") -> list[int]:
    """Token ids that ask for the *last* response: everything before it, ready to generate."""
    msgs = messages({**example, "response": ""})[:-1]
    if template == "chat":
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if template == "base":
        ids = [tokenizer.bos_token_id]
        for text, _ in _base_segments(msgs + [{"role": "assistant", "content": ""}])[:-1]:
            ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids
    raise LabkitError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")


def format_dataset(examples: Iterable[dict], tokenizer, template: str = "chat", *, max_length: int | None = None,
                   last_turn_only: bool = False, truncation: str = "error", on_error: str = "skip"):
    """Format many examples; return ``(rows, skipped)`` where ``skipped`` counts the reasons
    (``{"empty response": 3, "too long": 1}``). ``on_error="raise"`` stops at the first bad one."""
    if on_error not in ("skip", "raise"):
        raise LabkitError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    rows, skipped = [], {}
    for ex in examples:
        try:
            rows.append(format_example(ex, tokenizer, template, max_length=max_length,
                                       last_turn_only=last_turn_only, truncation=truncation))
        except LabkitError as exc:
            if on_error == "raise":
                raise
            msg = str(exc)
            reason = "empty response" if "empty response" in msg else "too long" if "max_length" in msg else msg
            skipped[reason] = skipped.get(reason, 0) + 1
    return rows, skipped


def format_pretraining(texts: list[str], tokenizer, seq_len: int) -> list[dict]:
    """Continue-pretraining rows: ``<bos> doc <eos>`` for every text, streamed and cut into
    ``seq_len`` windows (the last partial window is dropped). Loss on every token: raw text has
    no prompt to ignore, and documents simply follow each other as in pretraining."""
    from ..train import pack_documents

    if seq_len < 2:
        raise LabkitError(f"seq_len must be at least 2, got {seq_len}")
    stream = pack_documents(tokenizer, texts).tolist()
    n = len(stream) // seq_len
    if n == 0:
        raise LabkitError(f"only {len(stream)} tokens of text: fewer than seq_len={seq_len}")
    return [{"input_ids": w, "attention_mask": [1] * seq_len, "labels": list(w)}
            for w in (stream[i * seq_len:(i + 1) * seq_len] for i in range(n))]
