"""The two text corpora: general stories (pretraining) and maintenance logs of machines (fine-tuning).

Why a module: both corpora are drawn the same way -- one context of slots per document (the same
person, town and machine throughout), a few middle sentences kept in table order to fit 3-8
sentences and 40-120 words, and sometimes a fact sentence dealt from a `_Deck` -- so the shared
assembly lives beside the two generators. `general_corpus` pretrained lab-tiny and feeds labs
03 §9, 10 §5, 11 §5 and 15 §6; `domain_corpus` is the fine-tuning set of lab 06 (and the
continue-pretraining data of lab 09 §5, the retrieval corpus of lab 15 §6).
"""
from __future__ import annotations

import random

from ..data_templates import (
    ACTIVITIES, ADJ, ANIMALS, BRIDGE_OF, BRIDGES, BUILDINGS, CAUSES, CONDITIONS, DISHES, DOMAIN_THEME_NAMES,
    DOMAIN_THEMES, FEELINGS, GROCERIES, INSTRUMENTS, JOBS, MACHINES, NUMBERS, OBJECTS, ORDER_WORDS, PARTS, PLACES,
    PRODUCE, PURPOSE, RELATIVES, RIVER_OF, SCENERY, SEASONS, SPICES, THEME_NAMES, THEMES, TIMES, TOGETHER, TOOLS,
    TOPICS, TOWN_ADJ, TOWNS, TRANSPORT, WEATHER, WEEKDAYS,
)
from .english import _a, _cap, _person
from .facts import DOMAIN_FACTS, FACTS, _Deck, _fact_cards, fact_sentence
from .splits import _draw, split_of

__all__ = ["general_corpus", "domain_corpus", "_story_context", "_middles", "_finish", "_assemble", "_fact_block",
           "_general_doc", "_domain_context", "_domain_doc"]


def _story_context(rng: random.Random) -> dict:
    """Draw every slot of one general document once, so that its sentences agree
    (the same person, town and weather throughout)."""
    ctx = _person(rng)
    friend = _person(rng, "2")
    while friend["name2"] == ctx["name"]:
        friend = _person(rng, "2")
    ctx.update(friend, friend=friend["name2"])
    (job, duty), (job2, _) = rng.sample(JOBS, 2)
    town, town2 = rng.sample(TOWNS, 2)
    animal = rng.choice(ANIMALS)
    (weather, consequence), (weather2, _) = rng.sample(WEATHER, 2)
    (feeling, reason), (feeling2, reason2) = rng.sample(FEELINGS, 2)
    places, foods, dishes = rng.sample(PLACES, 2), rng.sample(PRODUCE + GROCERIES, 2), rng.sample(DISHES, 2)
    scenery, adjs = rng.sample(SCENERY, 2), rng.sample(ADJ, 2)
    ctx.update(
        job=job, a_job=_a(job), duty=duty, a_job2=_a(job2), town=town, town2=town2, river=RIVER_OF[town],
        place=places[0], place2=places[1], food=foods[0], food2=foods[1], produce=rng.choice(PRODUCE),
        dish=dishes[0], a_dish=_a(dishes[0]), a_dish2=_a(dishes[1]), spice=rng.choice(SPICES), object=rng.choice(OBJECTS),
        a_object=_a(rng.choice(OBJECTS)), relative=rng.choice(RELATIVES), topic=rng.choice(TOPICS),
        time=rng.choice(TIMES), day=rng.choice(WEEKDAYS), season=rng.choice(SEASONS),
        transport=rng.choice(TRANSPORT), scenery=scenery[0], scenery2=scenery[1],
        weather=weather, consequence=consequence, weather2=weather2, feeling=feeling, feeling2=feeling2,
        num=rng.choice(NUMBERS), num2=rng.choice(NUMBERS), instrument=rng.choice(INSTRUMENTS),
        animal=animal[0], animals=animal[1], a_animal=_a(animal[0]), size=animal[2], habitat=animal[3],
        diet=animal[4], feature=animal[5], adj=adjs[0], adj2=adjs[1],
        town_adj=rng.choice(TOWN_ADJ), building=rng.choice(BUILDINGS),
    )
    # second pass: slots whose values are themselves templates
    friend_view = {**ctx, "he": ctx["he2"], "his": ctx["his2"], "him": ctx["him2"]}
    acts, tog = rng.sample(ACTIVITIES, 2), rng.sample(TOGETHER, 2)
    ctx.update(
        reason=reason.format_map(ctx), reason2=reason2.format_map(friend_view),
        activity=acts[0].format_map(ctx), activity2=acts[1].format_map(ctx),
        together=tog[0].format_map(ctx), together2=tog[1].format_map(ctx),
    )
    return ctx


def _middles(rng: random.Random, templates: list[str], ctx: dict, k: int = 6) -> list[tuple[int, str]]:
    """k random middle templates, filled in, remembering their place in the table."""
    idx = rng.sample(range(len(templates)), min(k, len(templates)))
    return [(i, templates[i].format_map(ctx)) for i in idx]


def _finish(sents: list[str]) -> str | None:
    """Join sentences into a document, or None if it breaks the 3-8 sentence / 40-120 word rule."""
    n_words = len(" ".join(sents).split())
    if not (3 <= len(sents) <= 8 and 40 <= n_words <= 120):
        return None
    return " ".join(_cap(s) for s in sents)


def _assemble(rng: random.Random, intro: str, middles: list[tuple[int, str]], facts: list[str], outro: str) -> str | None:
    """Keep k of the middles (in table order, so the story flows) with k chosen to fit the
    length rule; the fact sentences go in at a random position."""
    pos = rng.randint(0, len(middles))
    kmax = min(len(middles), 6 - len(facts))
    k = rng.randint(max(1, kmax - 4), max(1, kmax))

    def build(k):
        body = [s for _, s in sorted(middles[:k])]
        return [intro] + body[:pos] + facts + body[pos:] + [outro]

    sents = build(k)
    while k < kmax and len(" ".join(sents).split()) < 40:
        k += 1
        sents = build(k)
    while k > 0 and len(" ".join(sents).split()) > 120:
        k -= 1
        sents = build(k)
    return _finish(sents)


def _fact_block(rng: random.Random, ctx: dict, card) -> list[str]:
    """One fact sentence, often introduced by a bridge sentence."""
    (e, rel, a), phrasing = card
    out = []
    if rng.random() < 0.6:
        bridge = rng.choice(BRIDGES[BRIDGE_OF[rel]])
        out.append(bridge.format_map({**ctx, "e": e, "a_e": _a(e)}))
    return out + [fact_sentence(e, rel, a, phrasing)]


def _general_doc(rng: random.Random, deck: _Deck) -> str | None:
    theme = THEMES[rng.choice(THEME_NAMES)]
    ctx = _story_context(rng)
    intro = rng.choice(theme["intro"]).format_map(ctx)
    outro = rng.choice(theme["outro"]).format_map(ctx)
    middles = _middles(rng, theme["middle"], ctx)
    facts = []
    if rng.random() < 0.3:  # about 30% of documents state one or two facts
        for _ in range(1 if rng.random() < 0.65 else 2):
            facts += _fact_block(rng, ctx, deck.draw())
    return _assemble(rng, intro, middles, facts, outro)


def _domain_context(rng: random.Random, machine: tuple) -> dict:
    ctx = _person(rng)
    part, part2, part3 = rng.sample(PARTS, 3)
    ctx.update(
        machine=machine[0], fluid=machine[1], purpose=PURPOSE[machine[0].split()[-1]], part=part, part2=part2, part3=part3,
        bay=rng.randint(1, 24), serial=rng.randint(100, 999), line=rng.choice("ABCDEF"), hour=rng.randint(6, 11),
        psi=rng.randrange(20, 122, 2), rpm=rng.randrange(600, 3650, 50), temp=rng.randint(40, 95),
        torque=rng.randrange(20, 125, 5), hours=rng.randrange(200, 9050, 50), days=rng.randint(7, 90),
        minutes=rng.randint(5, 30), num=rng.choice(NUMBERS[2:]), condition=rng.choice(CONDITIONS),
        cause=rng.choice(CAUSES), tool=rng.choice(TOOLS), shift=rng.choice(("night", "morning", "day")),
    )
    return ctx


def _domain_doc(rng: random.Random, deck: _Deck) -> str | None:
    """A log, procedure, fault report or spec sheet; about 40% also state facts about its machine."""
    cards = []
    if rng.random() < 0.4:
        cards.append(deck.draw())
        name = cards[0][0][0]
        if rng.random() < 0.35:  # a second fact about the same machine
            other = rng.choice([f for f in DOMAIN_FACTS if f[0] == name and f != cards[0][0]])
            cards.append((other, rng.choice((0, 0, 1, 2))))
        machine = next(m for m in MACHINES if m[0] == name)
    else:
        machine = rng.choice(MACHINES)
    theme_name = rng.choice(DOMAIN_THEME_NAMES)
    theme = DOMAIN_THEMES[theme_name]
    ctx = _domain_context(rng, machine)
    intro = rng.choice(theme["intro"]).format_map(ctx)
    outro = rng.choice(theme["outro"]).format_map(ctx)
    facts = [fact_sentence(*fact, ph) for fact, ph in cards]
    if theme_name == "procedure":
        idx = sorted(rng.sample(range(len(theme["middle"])), rng.randint(3, 6 - len(facts))))
        steps = [f"{ORDER_WORDS[i]}, {theme['middle'][j].format_map(ctx)}" for i, j in enumerate(idx)]
        steps[-1] = "Finally, " + steps[-1].split(", ", 1)[1]
        return _finish([intro] + facts + steps + [outro])
    return _assemble(rng, intro, _middles(rng, theme["middle"], ctx), facts, outro)


def general_corpus(n_docs: int, *, seed: int = 0, split: str = "train") -> list[str]:
    """n_docs short English stories (3-8 sentences, 40-120 words); ~30% state one or two FACTS."""
    deck = _Deck(random.Random(f"general-facts:{seed}"), _fact_cards(FACTS))
    return _draw("general", lambda rng: _general_doc(rng, deck), n_docs, seed, split, split_of, lambda d: d)


def domain_corpus(n_docs: int, *, seed: int = 0, split: str = "train") -> list[str]:
    """n_docs maintenance logs, procedures, fault reports and spec sheets; ~40% state DOMAIN_FACTS."""
    deck = _Deck(random.Random(f"domain-facts:{seed}"), _fact_cards(DOMAIN_FACTS))
    return _draw("domain", lambda rng: _domain_doc(rng, deck), n_docs, seed, split, split_of, lambda d: d)
