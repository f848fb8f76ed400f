"""Preference pairs from the lab's own facts and sums, and the records TRL takes (built in lab 14 §3).

The pairs come from `labkit.data`, so the earlier labs' models have seen these prompts' kind and
every answer can be checked: chosen is the right answer, rejected one of the `KINDS` of failure.
`formats` gives the same pair as TRL's SFT, RM/DPO and PPO records, side by side.
"""
from __future__ import annotations

import random
import re

from .. import data
from ..errors import LabkitError

__all__ = ["KINDS", "preference_pairs", "formats", "_ADD_ANSWER", "_fact_qa", "_wrong_fact", "_sum_qa", "_off_by_one",
           "_no_stop", "_MAKERS"]

KINDS = ("wrong_fact", "off_by_one", "no_stop")


_ADD_ANSWER = re.compile(r"(\d+) plus (\d+) is (\d+)\.")


def _fact_qa(rng: random.Random):
    entity, relation, attribute = rng.choice(data.FACTS)
    question = rng.choice(data.FACT_QUESTIONS[relation]).format(e=entity)
    return question, (entity, relation, attribute)


def _wrong_fact(rng: random.Random) -> dict:
    question, (entity, relation, attribute) = _fact_qa(rng)
    # sorted: a set's order changes between Python runs (string hashing), the pairs must not
    others = sorted({a for _, r, a in data.FACTS if r == relation} - {attribute})
    wrong = rng.choice(others)
    return {"prompt": question, "chosen": data.fact_sentence(entity, relation, attribute),
            "rejected": data.fact_sentence(entity, relation, wrong), "kind": "wrong_fact"}


def _sum_qa(rng: random.Random):
    question, answer = data.task_add(rng)   # "What is 17 plus 25?", "17 plus 25 is 42."
    x, y, total = (int(g) for g in _ADD_ANSWER.fullmatch(answer).groups())
    return question, answer, x, y, total


def _off_by_one(rng: random.Random) -> dict:
    question, answer, x, y, total = _sum_qa(rng)
    wrong = total + (1 if total == 0 else rng.choice((-1, 1)))
    return {"prompt": question, "chosen": answer, "rejected": f"{x} plus {y} is {wrong}.", "kind": "off_by_one"}


def _no_stop(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        question, fact = _fact_qa(rng)
        answer = data.fact_sentence(*fact)
    else:
        question, answer, *_ = _sum_qa(rng)
    words = answer.split()
    loop = [answer] * rng.randint(2, 4) + [" ".join(words[:rng.randint(1, len(words) - 1)])]
    return {"prompt": question, "chosen": answer, "rejected": " ".join(loop), "kind": "no_stop"}


_MAKERS = {"wrong_fact": _wrong_fact, "off_by_one": _off_by_one, "no_stop": _no_stop}


def preference_pairs(n: int, seed: int = 0, kinds=KINDS, *, split: str = "train") -> list[dict]:
    """``n`` pairs ``{"prompt", "chosen", "rejected", "kind"}``, the same on every machine for a seed.

    ``kinds`` (a subset of `KINDS`, or one kind) take turns, so each makes up an equal share (the
    first ones get the remainder). Prompts belong to ``split`` by `labkit.data.split_of`; no pair
    repeats (the same prompt may come back with another rejected answer)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise LabkitError(f"n must be a non-negative integer, got {n!r}")
    if split not in data.SPLITS:
        raise LabkitError(f"split must be one of {data.SPLITS}, got {split!r}")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise LabkitError(f"kinds must be a non-empty selection of {KINDS}, got {unknown or list(kinds)}")
    rng = random.Random(f"preference:{seed}")   # str seeds are hashed with sha512: stable everywhere
    out, seen, misses = [], set(), 0
    while len(out) < n:
        pair = _MAKERS[kinds[len(out) % len(kinds)]](rng)
        key = (pair["prompt"], pair["chosen"], pair["rejected"])
        if data.split_of(pair["prompt"]) != split or key in seen:
            misses += 1              # 5,000 draws in a row without a new pair: that kind is used up
            if misses > 5000:
                raise LabkitError(f"could only make {len(out)} distinct {split} pairs of kinds {list(kinds)}; "
                                  "ask for fewer")
            continue
        seen.add(key)
        out.append(pair)
        misses = 0
    return out


def formats(pair: dict) -> dict[str, dict]:
    """The same pair as TRL's trainers want it, side by side, in TRL's *conversational* format:

    * ``"sft"``: prompt-completion, ``{"prompt": [user], "completion": [assistant: chosen]}``
      (`trl.SFTTrainer`; the loss trains the completion only);
    * ``"rm"``: preference with an explicit prompt, ``{"prompt": [user], "chosen": [assistant],
      "rejected": [assistant]}`` (`trl.RewardTrainer`, and `trl.DPOTrainer` takes the same record);
    * ``"ppo"``: prompt-only, ``{"prompt": [user]}`` -- the policy writes the answer online.
    """
    if not isinstance(pair, dict):
        raise LabkitError(f"pair must be a dict with 'prompt', 'chosen' and 'rejected', got {type(pair).__name__}")
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(pair.get(key), str):
            got = type(pair.get(key)).__name__
            raise LabkitError(f"pair[{key!r}] must be a string (see preference_pairs), got {got}")
    user = [{"role": "user", "content": pair["prompt"]}]
    chosen = [{"role": "assistant", "content": pair["chosen"]}]
    rejected = [{"role": "assistant", "content": pair["rejected"]}]
    return {"sft": {"prompt": user, "completion": chosen},
            "rm": {"prompt": user, "chosen": chosen, "rejected": rejected},
            "ppo": {"prompt": user}}
