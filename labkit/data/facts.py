"""The fictional facts: FACTS of the lab world, DOMAIN_FACTS of its machines, their sentences and probes.

Why a module: the general corpus keeps repeating a fixed list of made-up facts ("The capital of
Veloria is Marden."), so the model can only know them from our corpus, and `fact_probes` measures
exactly what pretraining taught it (lab 00 §6, lab 06 §4, lab 11 §8). DOMAIN_FACTS, stated only in
the maintenance logs, are what fine-tuning teaches (`domain_probes`, lab 06 §4, lab 09 §9; lab 04 §3).
`_Deck` deals the facts in shuffled rounds so that each is stated about equally often.
"""
from __future__ import annotations

import random

from ..data_templates import BIRDS, COUNTRIES, MACHINES, PEOPLE, RELATIONS
from .english import _cap

__all__ = ["FACTS", "DOMAIN_FACTS", "fact_sentence", "fact_probes", "domain_probes", "_Deck", "_fact_cards"]

FACTS: list[tuple[str, str, str]] = (
    [(c, "capital", cap) for c, cap, _, _ in COUNTRIES]
    + [(c, "language", lang) for c, _, lang, _ in COUNTRIES]
    + [(cap, "river", river) for _, cap, _, river in COUNTRIES]
    + [(bird, "colour", colour) for bird, colour in BIRDS]
    + [(p, "job", job) for p, job, _ in PEOPLE]
    + [(p, "born", town) for p, _, town in PEOPLE]
)
DOMAIN_FACTS: list[tuple[str, str, str]] = [
    (m, rel, attr)
    for m, *attrs in MACHINES
    for rel, attr in zip(("lubricant", "weak_part", "maker", "overheat_code"), attrs)
]


def fact_sentence(entity: str, relation: str, attribute: str, phrasing: int = 0) -> str:
    """Phrasing 0 is the canonical sentence (probe prompt + answer); 1 and 2 are paraphrases."""
    prompt, others = RELATIONS[relation]
    if phrasing == 0:
        return prompt.format(e=entity) + " " + attribute + "."
    return _cap(others[phrasing - 1].format(e=entity, a=attribute))


def fact_probes() -> list[tuple[str, str]]:
    """(prompt, answer) per fact, e.g. ("The capital of Veloria is", "Marden")."""
    return [(RELATIONS[r][0].format(e=e), a) for e, r, a in FACTS]


def domain_probes() -> list[tuple[str, str]]:
    """(prompt, answer) per domain fact, e.g. ("The Brenna pump is made by", "Halvik")."""
    return [(RELATIONS[r][0].format(e=e), a) for e, r, a in DOMAIN_FACTS]


class _Deck:
    """Deal cards in shuffled rounds, so every fact is stated about equally often
    (a plain random choice would leave some facts almost unseen in a small corpus)."""

    def __init__(self, rng: random.Random, cards: list):
        self.rng, self.cards, self.pile = rng, cards, []

    def draw(self):
        if not self.pile:
            self.pile = list(self.cards)
            self.rng.shuffle(self.pile)
        return self.pile.pop()


def _fact_cards(facts) -> list:
    """The canonical phrasing is dealt twice as often as each paraphrase."""
    return [(fact, ph) for fact in facts for ph in (0, 0, 1, 2)]
