"""Lab 09: SFT data -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise

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


EXERCISES: dict[str, Exercise | CodeExercise] = {
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
