"""The few bits of English every generator shares: an article, a capital letter, a person, some words.

Why a module: the general stories, the maintenance logs, the word problems and the chat data all
need a person with matching pronouns ("she ... her") and sentences that start with a capital, and
the instructions and dialogues share their "repeat / reverse / count these words" answers. Kept in
one place so that every corpus speaks the same English. They shape every text the labs read, first
the stories lab-tiny was pretrained on (lab 00 §6) and the chat data of lab 09 §3.
"""
from __future__ import annotations

import random

from ..data_templates import FEMALE, MALE, SIMPLE_WORDS

__all__ = ["_a", "_cap", "_person", "_some_words", "_count_answer"]


def _a(word: str) -> str:
    """'a fox', 'an owl': good enough for our word lists."""
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _person(rng: random.Random, suffix: str = "") -> dict:
    """A first name with matching pronouns: {name}, {he}, {his}, {him} (+ suffix)."""
    female = rng.random() < 0.5
    name = rng.choice(FEMALE if female else MALE)
    he, his, him = ("she", "her", "her") if female else ("he", "his", "him")
    return {"name" + suffix: name, "he" + suffix: he, "his" + suffix: his, "him" + suffix: him}


def _some_words(rng: random.Random, lo: int = 3, hi: int = 7) -> list[str]:
    return rng.sample(SIMPLE_WORDS, rng.randint(lo, hi))


def _count_answer(k: int) -> str:
    return "There is 1 word." if k == 1 else f"There are {k} words."
