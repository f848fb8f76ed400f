"""Supervised fine-tuning data: formats, loss masks, packing, collation, dedup (lab 09).

An SFT example in the usual shape is ``{"prompt", "response", "history": [[user, assistant], ...]}``:
the history holds the earlier turns, ``prompt``/``response`` the last one. This module turns it into
``{"input_ids", "attention_mask", "labels"}`` where ``labels`` equals ``input_ids`` on the tokens the
loss trains and is ``-100`` (ignored by the cross-entropy) everywhere else.

Decisions, and why:

* **Loss only on assistant tokens.** The prompt is given at inference time; training the model to
  *predict* user turns wastes capacity on text it never has to write and teaches it to continue a
  conversation by inventing the user's next message.
* **The ``<|end|>`` after an answer carries loss.** It is the only way the model learns to stop.
  The role headers (``<|assistant|>`` + newline), the newline after ``<|end|>``, ``<|bos|>``,
  system and user turns and padding do not.
* **Multi-turn:** every assistant turn is trained by default (one forward pass teaches all of
  them, each conditioned on its true history); ``last_turn_only=True`` trains the final answer only.
* **Empty response:** `LabkitError` (only ``<|end|>`` would be trained, teaching the model to say
  nothing). **Truncation** may cut only untrained tokens; if it would cut a trained answer,
  `format_example` raises, or drops the oldest history turns first with ``truncation="drop_history"``.
  `format_dataset(..., on_error="skip")` skips such examples and counts why.
* **Turn text is stripped** of surrounding whitespace: the template supplies its own newlines, so
  ``<|assistant|>`` + newline always tokenizes the same way and `build_labels` can find it.
* **Packing** concatenates short examples into one row and restarts ``position_ids`` at each
  example. Transformers then builds the block-diagonal (per-document) causal mask itself --
  but only with ``attention_mask=None`` and no KV cache, so packed batches carry
  ``use_cache=False``. `document_mask` builds the same mask from scratch.
* **Continue-pretraining** data is raw text: ``<bos> doc <eos>`` streamed and cut into fixed
  windows, loss on every token (`format_pretraining`).

Lab 04's ``lora.instruction_batches`` / ``instruction_eval_batches`` are thin wrappers over
`format_example` + `sft_batches` / `eval_batches`; a test pins their labels to the tokenizer's own
``{% generation %}`` mask.
"""
from __future__ import annotations

import hashlib
import random
import re
from typing import Iterable, Iterator

import torch

from .errors import LabkitError

IGNORE = -100
TEMPLATES = ("chat", "base")
__all__ = ["IGNORE", "TEMPLATES", "messages", "format_example", "build_labels", "format_prompt",
           "format_dataset", "format_pretraining", "collate", "sft_batches", "eval_batches", "pack",
           "collate_packed", "packed_batches", "document_mask", "render_text", "render_html", "generate",
           "normalize", "text_of", "exact_dedup", "shingles", "jaccard", "minhash_signatures",
           "minhash_jaccard", "near_dedup", "length_filter", "clean", "token_counts", "mix_table", "main"]


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
    from .train import pack_documents

    if seq_len < 2:
        raise LabkitError(f"seq_len must be at least 2, got {seq_len}")
    stream = pack_documents(tokenizer, texts).tolist()
    n = len(stream) // seq_len
    if n == 0:
        raise LabkitError(f"only {len(stream)} tokens of text: fewer than seq_len={seq_len}")
    return [{"input_ids": w, "attention_mask": [1] * seq_len, "labels": list(w)}
            for w in (stream[i * seq_len:(i + 1) * seq_len] for i in range(n))]


# ---------------------------------------------------------------------------
# Batches: dynamic padding, packing
# ---------------------------------------------------------------------------
def collate(rows: list[dict], pad_id: int, device: str | torch.device = "cpu",
            pad_to_multiple_of: int | None = None) -> dict:
    """Right-pad rows to the longest in the batch: pad ids, attention 0, labels -100 (never trained)."""
    if not rows:
        raise LabkitError("collate needs at least one row")
    width = max(len(r["input_ids"]) for r in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        if len(r["labels"]) != n:
            raise LabkitError("a row's labels and input_ids differ in length")
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def sft_batches(rows: list[dict], batch_size: int, pad_id: int, seed: int = 0,
                device: str | torch.device = "cpu") -> Iterator[dict]:
    """An endless, seeded iterator of dynamically padded batches (reshuffled every epoch)."""
    if batch_size < 1 or not rows:
        raise LabkitError("sft_batches needs at least one row and batch_size >= 1")
    rng = random.Random(seed)
    while True:
        order = list(range(len(rows)))
        rng.shuffle(order)
        for i in range(0, max(1, len(order) - batch_size + 1), batch_size):
            yield collate([rows[j] for j in order[i:i + batch_size]], pad_id, device)


def eval_batches(rows: list[dict], batch_size: int, pad_id: int, device: str | torch.device = "cpu") -> list[dict]:
    """Fixed padded batches, in order, for a comparable held-out loss."""
    return [collate(rows[i:i + batch_size], pad_id, device) for i in range(0, len(rows), batch_size)]


def pack(rows: list[dict], seq_len: int) -> list[list[dict]]:
    """Group rows into packs of at most ``seq_len`` tokens (first-fit decreasing: longest rows
    first, each into the first pack with room). A row longer than ``seq_len`` is an error."""
    too_long = [len(r["input_ids"]) for r in rows if len(r["input_ids"]) > seq_len]
    if too_long:
        raise LabkitError(f"{len(too_long)} rows are longer than seq_len={seq_len} (longest {max(too_long)}); "
                          "raise seq_len or format with max_length")
    packs, room = [], []
    for r in sorted(rows, key=lambda r: -len(r["input_ids"])):
        n = len(r["input_ids"])
        j = next((k for k, free in enumerate(room) if free >= n), None)
        if j is None:
            packs.append([]), room.append(seq_len)
            j = len(packs) - 1
        packs[j].append(r)
        room[j] -= n
    return packs


def collate_packed(packs: list[list[dict]], seq_len: int, pad_id: int, device: str | torch.device = "cpu") -> dict:
    """One batch of packs: rows concatenated, ``position_ids`` restarting at 0 for every example,
    labels -100 on padding *and on the first token of every example* (it must not be predicted
    from the previous example's last token). ``use_cache=False`` so transformers derives the
    per-document causal mask from the position resets."""
    b = len(packs)
    ids = torch.full((b, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((b, seq_len), IGNORE, dtype=torch.long)
    pos = torch.zeros((b, seq_len), dtype=torch.long)
    for i, group in enumerate(packs):
        at = 0
        for r in group:
            n = len(r["input_ids"])
            ids[i, at:at + n] = torch.tensor(r["input_ids"])
            labels[i, at:at + n] = torch.tensor(r["labels"])
            labels[i, at] = IGNORE
            pos[i, at:at + n] = torch.arange(n)
            at += n
        pos[i, at:] = torch.arange(seq_len - at)  # padding tail: its own "document", never trained
    return {"input_ids": ids.to(device), "labels": labels.to(device), "position_ids": pos.to(device),
            "use_cache": False}


def packed_batches(rows: list[dict], seq_len: int, batch_size: int, pad_id: int, seed: int = 0,
                   device: str | torch.device = "cpu") -> Iterator[dict]:
    """An endless, seeded iterator of packed batches (packs shuffled every epoch)."""
    packs = pack(rows, seq_len)
    rng = random.Random(seed)
    while True:
        order = list(range(len(packs)))
        rng.shuffle(order)
        for i in range(0, max(1, len(order) - batch_size + 1), batch_size):
            yield collate_packed([packs[j] for j in order[i:i + batch_size]], seq_len, pad_id, device)


def document_mask(position_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The block-diagonal causal mask of packed rows, from scratch: token q may attend to token k
    iff k <= q and both are in the same example (a new example starts where the position resets).
    Returns an additive (batch, 1, L, L) mask (0 = attend, dtype's min = blocked), which both
    eager and sdpa attention accept."""
    doc = (position_ids == 0).long().cumsum(-1)                      # example index of every token
    L = position_ids.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=position_ids.device).tril()
    allowed = (doc[:, :, None] == doc[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


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


@torch.no_grad()
def generate(model, tokenizer, examples: list[dict], template: str = "chat", max_new_tokens: int = 24,
             stop_at_end_of_turn: bool = True, batch_size: int = 32) -> list[str]:
    """Greedy completions of the last prompt of each example, formatted with ``template`` (a name,
    or a function ``(example, tokenizer) -> prompt ids`` for any other format), in left-padded
    batches. Returns the new text with special tokens kept (so a generated ``<|user|>`` is visible),
    cut after the first stop token. ``stop_at_end_of_turn=False`` stops only at eos, like a server
    that does not know the chat template's end marker."""
    from .tokenizer import end_of_turn_ids

    device = next(model.parameters()).device
    stops = end_of_turn_ids(tokenizer) if stop_at_end_of_turn else [tokenizer.eos_token_id]
    outs = []
    for s in range(0, len(examples), batch_size):
        prompts = [template(ex, tokenizer) if callable(template) else format_prompt(ex, tokenizer, template)
                   for ex in examples[s:s + batch_size]]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
        gen = model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        for row in gen[:, width:].tolist():
            cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            outs.append(tokenizer.decode([t for t in row[:cut] if t != tokenizer.pad_token_id]))
    return outs


# ---------------------------------------------------------------------------
# Data construction: dedup, length filter, mix
# ---------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed: what 'the same text' means for exact dedup."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def text_of(item) -> str:
    """The text dedup and filters look at: a string, or an example's turns joined by newlines."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and "prompt" in item:
        turns = [t for pair in item.get("history") or [] for t in pair]
        return "\n".join(turns + [item["prompt"], item.get("response", "")])
    raise LabkitError("dedup works on strings or {prompt, response, history} examples")


def exact_dedup(items: list) -> tuple[list, list[int]]:
    """Keep the first of every group whose normalised text has the same SHA-1; return (kept, removed indices)."""
    seen, kept, removed = set(), [], []
    for i, it in enumerate(items):
        h = hashlib.sha1(normalize(text_of(it)).encode()).hexdigest()
        if h in seen:
            removed.append(i)
        else:
            seen.add(h)
            kept.append(it)
    return kept, removed


def shingles(text: str, n: int = 3) -> set[str]:
    """Word n-grams of the normalised text (a text shorter than n words is one shingle)."""
    words = normalize(text).split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 3) -> float:
    """Exact Jaccard similarity |A ∩ B| / |A ∪ B| of the two texts' word n-gram sets."""
    A, B = shingles(a, n), shingles(b, n)
    return len(A & B) / len(A | B) if A | B else 1.0


_PRIME = (1 << 31) - 1


def minhash_signatures(texts: list[str], num_perm: int = 64, n: int = 3, seed: int = 0) -> torch.Tensor:
    """MinHash, from scratch: for each of ``num_perm`` random hash functions h(x) = (a x + b) mod p
    over the 31-bit hashes of a text's shingles, keep the minimum. Two texts agree on one
    signature entry with probability equal to their Jaccard similarity. Returns (len(texts), num_perm) int64."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(1, _PRIME, (num_perm,), generator=g, dtype=torch.int64)
    b = torch.randint(0, _PRIME, (num_perm,), generator=g, dtype=torch.int64)
    sigs = torch.empty((len(texts), num_perm), dtype=torch.int64)
    for i, t in enumerate(texts):
        h = torch.tensor([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % _PRIME
                          for s in shingles(t, n)], dtype=torch.int64)
        sigs[i] = ((a[:, None] * h[None, :] + b[:, None]) % _PRIME).min(dim=1).values  # < 2^62: no overflow
    return sigs


def minhash_jaccard(sig_a: torch.Tensor, sig_b: torch.Tensor) -> float:
    """Estimated Jaccard: the fraction of signature entries that agree."""
    return (sig_a == sig_b).float().mean().item()


def near_dedup(items: list, threshold: float = 0.8, num_perm: int = 64, bands: int = 16, n: int = 3,
               seed: int = 0) -> tuple[list, list[tuple[int, int, float]]]:
    """Near-duplicate removal with MinHash + LSH: split each signature into ``bands`` bands; texts
    sharing any band are candidates (probability 1 - (1 - J^r)^bands, r = num_perm / bands);
    a candidate whose estimated Jaccard >= threshold with an earlier *kept* item is removed.
    Returns (kept, [(removed index, kept index, estimated Jaccard), ...])."""
    if num_perm % bands:
        raise LabkitError(f"num_perm={num_perm} must be a multiple of bands={bands}")
    sigs = minhash_signatures([text_of(it) for it in items], num_perm, n, seed)
    r = num_perm // bands
    buckets: dict = {}
    kept, removed = [], []
    for i in range(len(items)):
        keys = [(k, tuple(sigs[i, k * r:(k + 1) * r].tolist())) for k in range(bands)]
        candidates = {j for key in keys for j in buckets.get(key, ())}
        best = max(((minhash_jaccard(sigs[i], sigs[j]), j) for j in candidates), default=(0.0, -1))
        if best[0] >= threshold:
            removed.append((i, best[1], best[0]))
            continue
        kept.append(items[i])
        for key in keys:
            buckets.setdefault(key, []).append(i)
    return kept, removed


def length_filter(items: list, tokenizer, min_tokens: int = 1, max_tokens: int | None = None):
    """Keep items whose text is between min_tokens and max_tokens tokens; return (kept, removed indices)."""
    lengths = [len(x) for x in tokenizer([text_of(it) for it in items], add_special_tokens=False)["input_ids"]]
    keep = [min_tokens <= n and (max_tokens is None or n <= max_tokens) for n in lengths]
    return [it for it, k in zip(items, keep) if k], [i for i, k in enumerate(keep) if not k]


def clean(items: list, tokenizer, *, min_tokens: int = 3, max_tokens: int | None = 256, threshold: float = 0.8,
          num_perm: int = 64, bands: int = 16) -> tuple[list, list[dict]]:
    """Exact dedup -> near dedup -> length filter. Returns (kept, table): one row per filter with
    how many items it saw and removed."""
    table = []

    def step(name, result):
        kept, removed = result
        table.append({"filter": name, "in": len(kept) + len(removed), "removed": len(removed), "out": len(kept)})
        return kept

    items = step("exact dedup (normalised SHA-1)", exact_dedup(items))
    items = step(f"near dedup (MinHash, J >= {threshold})",
                 near_dedup(items, threshold=threshold, num_perm=num_perm, bands=bands))
    items = step(f"length {min_tokens}-{max_tokens} tokens", length_filter(items, tokenizer, min_tokens, max_tokens))
    return items, table


def token_counts(items: list, tokenizer) -> int:
    """Tokens in a list of texts or examples (no special tokens)."""
    return sum(len(x) for x in tokenizer([text_of(it) for it in items], add_special_tokens=False)["input_ids"])


def mix_table(sources: dict[str, list], tokenizer) -> list[dict]:
    """One row per source: items, tokens, share of all tokens."""
    counts = {name: token_counts(items, tokenizer) for name, items in sources.items()}
    total = sum(counts.values()) or 1
    return [{"source": name, "items": len(sources[name]), "tokens": counts[name], "share": counts[name] / total}
            for name in sources]


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    from . import cli, data
    from .tokenizer import load_tokenizer

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
