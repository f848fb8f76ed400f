"""Lab 09: SFT data -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (the tokenizer's own assistant
mask, direct counting, a hand formula), never from the notebook; each code exercise runs the
learner's function on fresh random inputs against the library where it has the piece (the chat
template's ``{% generation %}`` mask, transformers' ``DataCollatorWithFlattening``) and against
labkit's copy (proven equal in lab 09) where it does not (MinHash: no MinHash library in the venv).
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise, draw_int

def _dialogue_mask_sum(index: int, last_only: bool) -> float:
    """From the tokenizer's own {% generation %} mask (independent of labkit.sft.build_labels)."""
    from .. import data
    from ..tokenizer import load_tokenizer

    tok, d = load_tokenizer(), data.load("dialogues", "test")[index]
    if last_only:  # the final answer's tokens plus its <|end|>
        return float(len(tok(d["response"], add_special_tokens=False)["input_ids"]) + 1)
    msgs = [{"role": r, "content": c} for u, a in d["history"] for r, c in (("user", u), ("assistant", a))]
    msgs += [{"role": "user", "content": d["prompt"]}, {"role": "assistant", "content": d["response"]}]
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return float(sum(enc["assistant_masks"]))


def _padding_fraction_64() -> float:
    from .. import data
    from ..tokenizer import load_tokenizer

    tok = load_tokenizer()
    lengths = [len(tok.apply_chat_template([{"role": "user", "content": x["prompt"]},
                                            {"role": "assistant", "content": x["response"]}],
                                           tokenize=True, return_dict=True)["input_ids"])
               for x in data.load("instructions", "test")[:64]]
    batches = [lengths[i:i + 16] for i in range(0, 64, 16)]
    slots = sum(16 * max(b) for b in batches)
    return (slots - sum(lengths)) / slots


def _jaccard_3gram() -> float:
    def grams(s):
        w = s.split()
        return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}
    a = grams("the old miller of cadwell sold bread at the market every morning")
    b = grams("the old miller of cadwell sold cakes at the market every evening")
    return len(a & b) / len(a | b)


# ----------------------------------------------------------------------------- code
_WORDS = ("the", "miller", "of", "Cadwell", "sold", "bread", "river", "Add", "7", "and", "12", "What", "is",
          "blue", "?", "Gallow", "born", "in", "works", "as", "a", "tailor", ".", "lamp", "red", "quick")
_TOK: list = []
_TEMPLATE_MASK: dict = {}   # ids -> the chat template's own {% generation %} mask, filled when inputs are drawn


def _sentence(gen, low: int = 1, high: int = 8) -> str:
    return " ".join(_WORDS[draw_int(gen, 0, len(_WORDS) - 1)] for _ in range(draw_int(gen, low, high)))


def _tokenizer():
    if not _TOK:
        from ..tokenizer import load_tokenizer

        _TOK.append(load_tokenizer())
    return _TOK[0]


def _dialogue_inputs(gen):
    """A random 1-4 turn conversation (sometimes with a system turn) rendered with the lab's chat
    template: (ids, assistant id, end id, newline id, last_turn_only)."""
    tok = _tokenizer()
    msgs = [{"role": "system", "content": _sentence(gen)}] if draw_int(gen, 0, 2) == 0 else []
    for _ in range(draw_int(gen, 1, 4)):
        msgs += [{"role": "user", "content": _sentence(gen)}, {"role": "assistant", "content": _sentence(gen)}]
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = list(enc["input_ids"])
    _TEMPLATE_MASK[tuple(ids)] = list(enc["assistant_masks"])
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    return (ids, tok.convert_tokens_to_ids("<|assistant|>"), tok.convert_tokens_to_ids("<|end|>"), newline,
            bool(draw_int(gen, 0, 1)))


def _labels_reference(ids, assistant_id, end_id, newline_id, last_turn_only):
    """transformers' {% generation %} mask of the same conversation; with last_turn_only, only its
    last contiguous span (the final answer and its <|end|>)."""
    import torch

    mask = list(_TEMPLATE_MASK[tuple(ids)])
    if last_turn_only:
        last = max(i for i, m in enumerate(mask) if m)
        first = last
        while first > 0 and mask[first - 1]:
            first -= 1
        mask = [int(first <= i <= last) for i in range(len(mask))]
    return torch.tensor([t if m else -100 for t, m in zip(ids, mask)])


def _as_tensor_run(fn, args):
    import torch

    return torch.as_tensor(fn(*args))


def _flatten_inputs(gen):
    """1-5 examples of random lengths, with labels -100 on a random prefix of each (the prompt)."""
    import torch

    rows = []
    for _ in range(draw_int(gen, 1, 5)):
        n = draw_int(gen, 1, 12)
        ids = torch.randint(3, 2048, (n,), generator=gen).tolist()
        k = draw_int(gen, 0, n)
        rows.append({"input_ids": ids, "labels": [-100] * k + ids[k:]})
    return (rows,)


def _flatten_reference(rows):
    """transformers' DataCollatorWithFlattening (padding-free): the one row, its labels and position ids."""
    from transformers import DataCollatorWithFlattening

    out = DataCollatorWithFlattening(return_position_ids=True)(rows)
    return out["input_ids"][0], out["labels"][0], out["position_ids"][0]


def _minhash_inputs(gen):
    import torch

    text = _sentence(gen, 1, 30)
    return text, (16, 32, 64, 128)[draw_int(gen, 0, 3)], draw_int(gen, 1, 4), int(torch.randint(0, 1000, (1,), generator=gen))


def _minhash_reference(text, num_perm, n, seed):
    from .. import sft

    return sft.minhash_signatures([text], num_perm=num_perm, n=n, seed=seed)[0]


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "09.assistant_labels": CodeExercise(
        question="write assistant_labels(ids, assistant_id, end_id, newline_id, last_turn_only=False): the SFT "
                 "labels of one chat-templated sequence -- the token id on every assistant token, -100 elsewhere",
        reference=_labels_reference, inputs=_dialogue_inputs, solution="assistant_labels", run=_as_tensor_run,
        hint="a turn starts after <|assistant|> and its newline and ends WITH the next <|end|> (it is trained: "
             "the model learns to stop); system and user turns, markers and the newline after <|end|> get -100"),
    "09.pack_position_ids": CodeExercise(
        question="write flatten_packed(rows): lay examples end to end in one padding-free row and return (input_ids, "
                 "labels, position_ids), as transformers' DataCollatorWithFlattening does",
        reference=_flatten_reference, inputs=_flatten_inputs, solution="flatten_packed",
        hint="position ids restart at 0 for every example; the first token of every example gets label -100 (it "
             "would be predicted from the previous example's last token)"),
    "09.minhash_signature": CodeExercise(
        question="write minhash_signature(text, num_perm=64, n=3, seed=0): the MinHash signature of one text, "
                 "entry for entry the one labkit.sft.minhash_signatures gives",
        reference=_minhash_reference, inputs=_minhash_inputs, solution="minhash_signature",
        hint="the normalised word n-grams, each hashed with blake2b (8 bytes, little-endian) mod p = 2^31 - 1; "
             "a and b drawn from torch.Generator().manual_seed(seed), a first; keep min over grams of (a h + b) mod p"),
    "09.loss_tokens_dialogue8": Exercise(
        "tokens that carry loss in test dialogue 8 (data.load('dialogues', 'test')[8], four turns), "
        "every assistant turn trained",
        lambda: _dialogue_mask_sum(8, False), 0.0,
        "each assistant turn's content tokens plus its <|end|>; not the '<|assistant|>' header or newlines"),
    "09.loss_tokens_dialogue8_last": Exercise(
        "the same dialogue with last_turn_only=True", lambda: _dialogue_mask_sum(8, True), 0.0,
        "the tokens of the final response, plus one for <|end|>"),
    "09.padding_fraction_64": Exercise(
        "fraction of padding slots when the first 64 test instructions (chat template) are batched 16 at a "
        "time, in order, each batch padded to its longest row", _padding_fraction_64, 1e-6,
        "slots = sum over batches of 16 x longest; padding = slots - real tokens"),
    "09.jaccard_3gram": Exercise(
        "exact Jaccard of the word-3-gram sets of 'the old miller of cadwell sold bread at the market every "
        "morning' and '... sold cakes at the market every evening'", _jaccard_3gram, 1e-9,
        "10 trigrams each; a changed word spoils every trigram that contains it"),
    "09.lsh_candidate_prob": Exercise(
        "probability that two texts with Jaccard 0.5 become MinHash-LSH candidates with 16 bands of 4 rows",
        lambda: 1 - (1 - 0.5 ** 4) ** 16, 1e-9, "a band matches with probability J^r; candidates if any band matches"),
}
