"""Multi-turn dialogues whose follow-up questions only make sense with the history.

Why a module: lab 09 (§3 the chat template, §6 loss on the last turn only, §8 the mix) needs chats
where the earlier turns matter -- "And what is their job?" names nobody -- so a model that ignores
the history is caught. Five kinds: the same relation about several entities, a person, a country,
running arithmetic, and transformations of a phrase. A dialogue is train only if *every* user turn
is a train prompt, so a test prompt never appears anywhere in training data.
"""
from __future__ import annotations

import json
import random

from ..data_templates import COUNTRIES, FACT_QUESTIONS, FOLLOW_UPS, PEOPLE, RIVER_OF
from .english import _count_answer, _some_words
from .facts import FACTS, fact_sentence
from .splits import _draw, split_of

__all__ = ["dialogues", "_dlg_same_relation", "_dlg_person", "_dlg_country", "_dlg_arithmetic", "_dlg_words",
           "_DIALOGUE_KINDS", "_dialogue", "_dialogue_split"]


def _dlg_same_relation(rng):
    """The same question about several entities: the follow-ups only make sense with the history."""
    rel = rng.choice(list(FACT_QUESTIONS))
    facts = rng.sample([f for f in FACTS if f[1] == rel], rng.randint(1, 4))
    turns = [(rng.choice(FACT_QUESTIONS[rel]).format(e=facts[0][0]), fact_sentence(*facts[0]))]
    the = "the " if rel == "colour" else ""
    return turns + [(rng.choice(FOLLOW_UPS).format(e=the + f[0]), fact_sentence(*f)) for f in facts[1:]]


def _dlg_person(rng):
    """Job, then birthplace, then the river of that town, then its country."""
    person, job, town = rng.choice(PEOPLE)
    country = next(c for c, cap, _, _ in COUNTRIES if cap == town)
    job = (("What does {p} do for a living?", "What is the job of {p}?", "What do they do for a living?",
            "And what is their job?"), fact_sentence(person, "job", job))
    born = (("Where was {p} born?", "In which town was {p} born?", "Where were they born?",
             "In which town were they born?"), fact_sentence(person, "born", town))
    first, second = (job, born) if rng.random() < 0.5 else (born, job)  # name first, then "they"
    turns = [(rng.choice(first[0][:2]).format(p=person), first[1]), (rng.choice(second[0][2:]), second[1])]
    turns += [
        (rng.choice(["Which river flows through that town?", "Which river flows through {t}?", "What is the river there?"]).format(t=town),
         fact_sentence(town, "river", RIVER_OF[town])),
        (rng.choice(["Which country is {t} the capital of?", "And which country is that town the capital of?"]).format(t=town),
         f"{town} is the capital of {country}."),
    ]
    return turns[: rng.randint(1, 4)]


def _dlg_country(rng):
    """Capital, then language, then the river of the capital."""
    country, cap, lang, river = rng.choice(COUNTRIES)
    turns = [
        (rng.choice(FACT_QUESTIONS["capital"]).format(e=country), fact_sentence(country, "capital", cap)),
        (rng.choice(["What language do people speak there?", "And which language is spoken in {c}?"]).format(c=country),
         fact_sentence(country, "language", lang)),
        (rng.choice(["Which river flows through {t}?", "Which river flows through the capital?", "And what is the river of that city?"]).format(t=cap),
         fact_sentence(cap, "river", river)),
    ]
    return turns[: rng.randint(1, 3)]


def _dlg_arithmetic(rng):
    """Running arithmetic: every answer is the starting number of the next question."""
    x, y = rng.randint(1, 30), rng.randint(1, 30)
    total = x + y
    turns = [(rng.choice(["What is {x} plus {y}?", "Add {x} and {y}."]).format(x=x, y=y), f"{x} plus {y} is {total}.")]
    for _ in range(rng.randint(0, 3)):
        op = rng.choice(["add", "sub", "mul"] if total < 100 else ["add", "sub"])
        if op == "sub" and total > 0:
            k = rng.randint(1, total)
            q, a, total = rng.choice(["Now subtract {k}.", "Take away {k}.", "And minus {k}?"]), f"{total} minus {k} is {total - k}.", total - k
        elif op == "mul":
            k = rng.randint(2, 5)
            q, a, total = rng.choice(["Now multiply it by {k}.", "Multiply that by {k}.", "And times {k}?"]), f"{total} times {k} is {total * k}.", total * k
        else:
            k = rng.randint(1, 20)
            q, a, total = rng.choice(["Now add {k}.", "Add {k} to that.", "And plus {k}?"]), f"{total} plus {k} is {total + k}.", total + k
        turns.append((q.format(k=k), a))
    return turns


def _dlg_words(rng):
    """Repeat a phrase, then transform the phrase from the first turn."""
    w = _some_words(rng)
    later = [
        (rng.choice(["Now reverse it.", "Say it backwards, word by word.", "Reverse the words."]), " ".join(reversed(w))),
        (rng.choice(["How many words is that?", "Count the words.", "How many words did I say?"]), _count_answer(len(w))),
        (rng.choice(["Now sort them alphabetically.", "Put the words in alphabetical order."]), " ".join(sorted(w))),
    ]
    return [("Repeat after me: " + " ".join(w), " ".join(w))] + rng.sample(later, rng.randint(0, 3))


_DIALOGUE_KINDS = [_dlg_same_relation, _dlg_person, _dlg_country, _dlg_arithmetic, _dlg_words]


def _dialogue(rng: random.Random) -> dict:
    turns = rng.choice(_DIALOGUE_KINDS)(rng)
    return {"prompt": turns[-1][0], "response": turns[-1][1], "history": [list(t) for t in turns[:-1]]}


def _dialogue_split(d: dict) -> str | None:
    """Test if the last prompt is a test prompt. Train only if *every* user turn is a train
    prompt, so a test prompt never appears anywhere in training data. Otherwise unusable."""
    if split_of(d["prompt"]) == "test":
        return "test"
    return "train" if all(split_of(u) == "train" for u, _ in d["history"]) else None


def dialogues(n: int, *, seed: int = 0, split: str = "train") -> list[dict]:
    """{"prompt", "response", "history": [[user, assistant], ...]}: 1-4 coherent turns, the last one in prompt/response."""
    return _draw("dialogues", _dialogue, n, seed, split, _dialogue_split, lambda d: json.dumps(d))
