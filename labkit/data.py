"""Synthetic data sets for the labs: corpora, facts, instructions, dialogues, word problems.

Why synthetic? The labs run offline on a laptop CPU, so nothing can be downloaded,
and every number a learner sees must be reproducible. Generating the text with
small template grammars gives us three things real data cannot:

* **Offline and tiny.** A few thousand templated documents with a vocabulary of
  about a thousand words are enough for a 4M-parameter model to become fluent
  in under two minutes on one GPU.
* **Reproducible.** Every generator takes a ``seed`` and uses its own
  ``random.Random``; the same call gives the same text on every machine.
* **Measurable knowledge.** The general corpus keeps repeating a fixed list of
  fictional FACTS ("The capital of Veloria is Marden."). Because they are
  fictional, the model can only know them from our corpus, so ``fact_probes()``
  measures exactly what pretraining taught it, and what fine-tuning on the
  DOMAIN corpus (maintenance logs of fictional machines) makes it forget.

Train/test splits are disjoint *by construction*: an item belongs to the split
``split_of(key)`` (a hash of the document text, or of the prompt/question), and
the generators simply skip items of the other split. Only the fact sentences,
which are shared knowledge, appear in both.

The word tables and sentence templates (the fictional world itself) live in
``labkit.data_templates``; this module is the code that draws documents and items from them.
Which lab uses what: ``general_corpus`` pretrained lab-tiny and feeds labs 03 §9, 10 §5, 11 §5
and 15 §6; ``fact_probes`` measure it (lab 00 §6, lab 06 §4, lab 11 §8); ``domain_corpus`` is the
fine-tuning set of lab 06; ``domain_fact_instructions`` is the knowledge task of lab 04 §3 (and
labs 05 §9, 13 §4); ``instructions`` and ``dialogues`` are the SFT data of lab 09 and lab 16 §5;
``word_problems`` and ``APPLES_PROBLEM`` are the chain-of-thought task of lab 08 §4; ``load``
reads the committed samples (labs 02, 05, 06, 09, 16).

Regenerate the committed sample files in ``data/corpora/`` with::

    python -m labkit data
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from .data_templates import (
    COUNTRIES, BIRDS, PEOPLE, MACHINES, RELATIONS, FEMALE, MALE, TOWNS, RIVER_OF, JOBS, PLACES,
    ANIMALS, PRODUCE, GROCERIES, SPICES, DISHES, OBJECTS, RELATIVES, TOPICS, TIMES, WEEKDAYS,
    SEASONS, TRANSPORT, SCENERY, WEATHER, FEELINGS, ACTIVITIES, TOGETHER, ADJ, TOWN_ADJ, NUMBERS,
    INSTRUMENTS, BUILDINGS, THEMES, THEME_NAMES, BRIDGES, BRIDGE_OF, PURPOSE, PARTS, CONDITIONS,
    CAUSES, TOOLS, DOMAIN_THEMES, DOMAIN_THEME_NAMES, ORDER_WORDS, FACT_QUESTIONS, OPPOSITE_OF,
    SIMPLE_WORDS, DOMAIN_QUESTIONS, FOLLOW_UPS, ITEMS, GROUPS, ADD_VERBS, CONTAINERS, VERB_FORMS,
)

__all__ = ["SPLITS", "NAMES", "CORPORA_DIR", "FACTS", "DOMAIN_FACTS", "FACT_QUESTIONS", "APPLES_PROBLEM",
           "fact_sentence", "fact_probes", "domain_probes", "split_of", "general_corpus", "domain_corpus",
           "task_add", "instructions", "domain_fact_instructions", "dialogues", "word_problems",
           "write_corpora", "load"]

SPLITS = ("train", "test")
NAMES = ("general", "domain", "instructions", "dialogues", "word_problems")
CORPORA_DIR = Path(__file__).resolve().parent.parent / "data" / "corpora"


def _a(word: str) -> str:
    """'a fox', 'an owl': good enough for our word lists."""
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# =========================================================================== facts
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


# =========================================================================== general corpus
def _person(rng: random.Random, suffix: str = "") -> dict:
    """A first name with matching pronouns: {name}, {he}, {his}, {him} (+ suffix)."""
    female = rng.random() < 0.5
    name = rng.choice(FEMALE if female else MALE)
    he, his, him = ("she", "her", "her") if female else ("he", "his", "him")
    return {"name" + suffix: name, "he" + suffix: he, "his" + suffix: his, "him" + suffix: him}


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


# =========================================================================== domain corpus
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


# =========================================================================== the draw loop
def split_of(text: str) -> str:
    """The split an item belongs to: a hash of its key text, the same on every machine."""
    return "test" if int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10 == 0 else "train"


def _check(n: int, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def _draw(name: str, make, n: int, seed: int, split: str, split_fn, ident, first=()) -> list:
    """Call make(rng) until n items of `split` are collected, skipping the other split,
    duplicates (same ident) and failed attempts (None)."""
    _check(n, split)
    rng = random.Random(f"{name}:{seed}")  # str seeds are hashed with sha512: stable everywhere
    out = list(first)[:n]
    seen = {ident(x) for x in out}
    budget = 1000 + 200 * n
    while len(out) < n:
        budget -= 1
        if budget < 0:
            raise ValueError(f"could only make {len(out)} unique {name} items for split={split!r}; ask for fewer")
        item = make(rng)
        if item is None or split_fn(item) != split or ident(item) in seen:
            continue
        seen.add(ident(item))
        out.append(item)
    return out


def general_corpus(n_docs: int, *, seed: int = 0, split: str = "train") -> list[str]:
    """n_docs short English stories (3-8 sentences, 40-120 words); ~30% state one or two FACTS."""
    deck = _Deck(random.Random(f"general-facts:{seed}"), _fact_cards(FACTS))
    return _draw("general", lambda rng: _general_doc(rng, deck), n_docs, seed, split, split_of, lambda d: d)


def domain_corpus(n_docs: int, *, seed: int = 0, split: str = "train") -> list[str]:
    """n_docs maintenance logs, procedures, fault reports and spec sheets; ~40% state DOMAIN_FACTS."""
    deck = _Deck(random.Random(f"domain-facts:{seed}"), _fact_cards(DOMAIN_FACTS))
    return _draw("domain", lambda rng: _domain_doc(rng, deck), n_docs, seed, split, split_of, lambda d: d)


# =========================================================================== instructions
def _some_words(rng: random.Random, lo: int = 3, hi: int = 7) -> list[str]:
    return rng.sample(SIMPLE_WORDS, rng.randint(lo, hi))


def _count_answer(k: int) -> str:
    return "There is 1 word." if k == 1 else f"There are {k} words."


def _task_fact(rng):
    e, rel, a = rng.choice(FACTS)
    return rng.choice(FACT_QUESTIONS[rel]).format(e=e), fact_sentence(e, rel, a)


def task_add(rng):
    x, y = rng.randint(0, 50), rng.randint(0, 50)
    q = rng.choice(["Add {x} and {y}.", "What is {x} plus {y}?", "What is the sum of {x} and {y}?"])
    return q.format(x=x, y=y), f"{x} plus {y} is {x + y}."


def _task_subtract(rng):
    x = rng.randint(0, 99)
    y = rng.randint(0, x)
    q = rng.choice(["Subtract {y} from {x}.", "What is {x} minus {y}?", "Take {y} away from {x}."])
    return q.format(x=x, y=y), f"{x} minus {y} is {x - y}."


def _task_multiply(rng):
    x, y = rng.randint(2, 12), rng.randint(2, 12)
    q = rng.choice(["What is {x} times {y}?", "Multiply {x} by {y}.", "What is the product of {x} and {y}?"])
    return q.format(x=x, y=y), f"{x} times {y} is {x * y}."


def _task_reverse(rng):
    w = _some_words(rng)
    return "Reverse the words: " + " ".join(w), " ".join(reversed(w))


def _task_opposite(rng):
    w = rng.choice(sorted(OPPOSITE_OF))
    return rng.choice(["What is the opposite of {w}?", "Give the opposite of {w}."]).format(w=w), OPPOSITE_OF[w]


def _task_count(rng):
    w = _some_words(rng, 2, 9)
    return "Count the words: " + " ".join(w), _count_answer(len(w))


def _task_repeat(rng):
    w = _some_words(rng)
    return "Repeat after me: " + " ".join(w), " ".join(w)


def _task_sort(rng):
    w = _some_words(rng, 3, 6)
    return "Sort these words alphabetically: " + " ".join(w), " ".join(sorted(w))


_TASKS = {
    "fact": _task_fact, "add": task_add, "subtract": _task_subtract, "multiply": _task_multiply,
    "reverse": _task_reverse, "opposite": _task_opposite, "count": _task_count, "repeat": _task_repeat,
    "sort": _task_sort,
}
_task_add = task_add              # the old private names, still imported by labkit.preference
_FACT_QUESTIONS = FACT_QUESTIONS  # and the tests; new code imports the public ones
_OPPOSITE_OF = OPPOSITE_OF


def _instruction(rng: random.Random) -> dict:
    task = rng.choice(list(_TASKS))
    prompt, response = _TASKS[task](rng)
    return {"prompt": prompt, "response": response, "task": task}


def instructions(n: int, *, seed: int = 0, split: str = "train") -> list[dict]:
    """{"prompt", "response", "task"} items whose responses can be checked exactly."""
    key = lambda d: d["prompt"]
    return _draw("instructions", _instruction, n, seed, split, lambda d: split_of(key(d)), key)


def domain_fact_instructions(seed: int = 0, n_val: int = 16, n_test: int = 32) -> dict[str, list[dict]]:
    """The 80 DOMAIN_FACTS as chat questions, split to test whether fine-tuning *teaches new facts* (lab 04, §3).

    lab-tiny never read these facts (they live only in the domain corpus of lab 06), so its base
    model cannot answer them: a task off the floor and off the ceiling. Every fact is trained in its
    first wording; the second wording of ``n_val`` facts is held back to choose learning rates
    (``"val"``), that of ``n_test`` other facts is the held-out test (``"test"``), and the rest train
    in both wordings (``"fit"``). So a held-out question asks a fact the model was taught, in words
    it never saw with that fact -- recall, not string matching. Items are
    ``{"prompt", "response", "task": "domain_fact"}``; the response is the fact's canonical sentence.
    ``seed`` picks which facts fall in which group.
    """
    n = len(DOMAIN_FACTS)
    if n_val < 0 or n_test < 1 or n_val + n_test > n:
        raise ValueError(f"need 0 <= n_val, 1 <= n_test and n_val + n_test <= {n}; got n_val={n_val}, n_test={n_test}")
    order = list(range(n))
    random.Random(f"domain-fact-instructions:{seed}").shuffle(order)
    val_ids, test_ids, both_ids = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]

    def item(i: int, wording: int) -> dict:
        entity, relation, attribute = DOMAIN_FACTS[i]
        return {"prompt": DOMAIN_QUESTIONS[relation][wording].format(e=entity),
                "response": fact_sentence(entity, relation, attribute), "task": "domain_fact"}

    return {"fit": [item(i, 0) for i in order] + [item(i, 1) for i in both_ids],
            "val": [item(i, 1) for i in val_ids], "test": [item(i, 1) for i in test_ids]}

# =========================================================================== dialogues
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


# =========================================================================== word problems
APPLES_PROBLEM: dict = {
    "question": "The cafeteria had 23 apples. If they used 20 to make lunch and bought 6 more, how many apples do they have?",
    "steps": ["They used 20, so 23 - 20 = 3.", "They bought 6 more, so 3 + 6 = 9."],
    "solution": "They used 20, so 23 - 20 = 3. They bought 6 more, so 3 + 6 = 9. The answer is 9.",
    "answer": 9,
    "n_steps": 2,
}


def _verb(phrase: str, past: bool, third: bool) -> str:
    """Conjugate the first word of a verb phrase: 'give away' -> 'gives away' / 'gave away'."""
    head, *rest = phrase.split()
    third_form, past_form = VERB_FORMS[head]
    return " ".join([past_form if past else third_form if third else head] + rest)


def _wp_step(rng, x: int, items: str, sub_verbs: list[str], v) -> tuple[str, str, str, int] | None:
    """One operation on the running total x: (question clause, step clause, equation, new total),
    or None when the drawn operation does not fit x (no negatives, exact division, < 1000)."""
    kind = rng.choices(["add", "sub", "mul", "div"], weights=[3, 3, 1.5, 1.5])[0]
    if kind == "add" and x < 950:
        k, verb = rng.randint(1, 25), rng.choice(ADD_VERBS)
        clause = f"{v(verb)} {k} more" + (" from a friend" if verb == "get" else "")
        return clause, f"{v(verb)} {k} more", f"{x} + {k} = {x + k}", x + k
    if kind == "sub" and x >= 2:
        k, verb = rng.randint(1, x - 1), rng.choice(sub_verbs + ["give"])
        if verb == "give":
            return f"{v('give')} {k} to a friend", f"{v('give')} away {k}", f"{x} - {k} = {x - k}", x - k
        clause = f"{v(verb)} {k}"
        if verb == "use" and items in ("apples", "eggs") and rng.random() < 0.5:
            clause += rng.choice([" to make lunch", " to bake a cake", " for a picnic"])
        return clause, f"{v(verb)} {k}", f"{x} - {k} = {x - k}", x - k
    if kind == "mul" and 1 <= x <= 60:
        m = rng.randint(2, 5)
        if m <= 3 and rng.random() < 0.5:
            clause = f"{v('double' if m == 2 else 'triple')} the number of {items}"
        else:
            clause = f"{v('end')} up with {m} times as many"
        return clause, clause, f"{x} * {m} = {x * m}", x * m
    if kind == "div":
        divisors = [m for m in range(2, 7) if x % m == 0 and x >= m]
        if divisors:
            m = rng.choice(divisors)
            pile = rng.choice(["piles", "bags", "groups"])
            clause = f"{v('split')} them into {m} equal {pile} and {v('keep')} one of the {pile}"
            return clause, f"{v('keep')} one of {m} equal {pile}", f"{x} / {m} = {x // m}", x // m
    return None


def _word_problem(rng: random.Random, n_steps: int) -> dict:
    items, sub_verbs = rng.choice(ITEMS)
    past = rng.random() < 0.5
    if rng.random() < 0.5:
        p = _person(rng)
        subj, mid, pron, third = p["name"], p["name"], p["he"], True
    else:
        group = rng.choice(GROUPS)
        subj, mid, pron, third = f"The {group}", f"the {group}", "they", False
    v = lambda phrase: _verb(phrase, past, third)
    have = _verb("have", past, True)
    steps, clauses = [], []
    if rng.random() < 0.3:  # the starting amount is itself a multiplication step
        a, b, cont = rng.randint(2, 9), rng.randint(2, 12), rng.choice(CONTAINERS)
        opening = f"{subj} {have} {a} {cont} of {items} with {b} in each."
        steps.append(f"There {'were' if past else 'are'} {a} {cont} of {b}, so {a} * {b} = {a * b}.")
        x = a * b
    else:
        x = rng.randint(2, 40)
        opening = rng.choice([f"{subj} {have} {x} {items}.", f"At first, {mid} {have} {x} {items}."])
    while len(steps) < n_steps:
        op = _wp_step(rng, x, items, sub_verbs, v)
        if op is not None:
            clause, step_clause, equation, x = op
            clauses.append(clause)
            steps.append(f"{_cap(pron)} {step_clause}, so {equation}.")
    do, who = ("does", mid) if third else ("do", "they")
    if clauses and rng.random() < 0.5:  # "If they used 20 and bought 6 more, how many ...?"
        joined = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
        question = f"{opening} If {pron} {joined}, how many {items} {do} {pron} have?"
    else:
        links = ["", "Then ", "After that, ", "Later, ", "Next, "]
        body = [_cap(f"{links[i]}{pron} {c}.") for i, c in enumerate(clauses)]
        ending = rng.choice(["now", "in the end", "at the end"])
        question = " ".join([opening] + body + [f"How many {items} {do} {who} have {ending}?"])
    return {"question": question, "steps": steps, "solution": " ".join(steps) + f" The answer is {x}.",
            "answer": x, "n_steps": len(steps)}


def word_problems(n: int, *, seed: int = 0, split: str = "train", n_steps: int | None = None) -> list[dict]:
    """GSM8K-style problems with 1-5 worked steps; the test split starts with APPLES_PROBLEM
    (when n_steps is None or 2), and the train split never contains it."""
    if n_steps is not None and (isinstance(n_steps, bool) or n_steps not in range(1, 6)):
        raise ValueError(f"n_steps must be None or an integer from 1 to 5, got {n_steps!r}")
    _check(n, split)
    apples = APPLES_PROBLEM["question"]
    first = [json.loads(json.dumps(APPLES_PROBLEM))] if split == "test" and n_steps in (None, 2) else []
    make = lambda rng: _word_problem(rng, n_steps or rng.randint(1, 5))
    split_fn = lambda d: None if d["question"] == apples else split_of(d["question"])
    return _draw("word_problems", make, n, seed, split, split_fn, lambda d: d["question"], first)


# =========================================================================== committed sample files
# name -> (train size, test size), all with seed 0; chosen so every file stays under 1 MiB.
# word_problems test has that many problems *per step count* (1..5).
_SAMPLE_SIZES = {"general": (2900, 500), "domain": (1400, 300), "instructions": (4000, 400),
                 "dialogues": (2500, 300), "word_problems": (2000, 100)}


def _sample(name: str, split: str) -> list:
    n = _SAMPLE_SIZES[name][SPLITS.index(split)]
    if name == "word_problems" and split == "test":  # n per step count, APPLES_PROBLEM first
        buckets = [word_problems(n, seed=0, split="test", n_steps=k) for k in range(1, 6)]
        return [buckets[1][0]] + buckets[0] + buckets[1][1:] + buckets[2] + buckets[3] + buckets[4]
    make = {"general": general_corpus, "domain": domain_corpus, "instructions": instructions,
            "dialogues": dialogues, "word_problems": word_problems}[name]
    return make(n, seed=0, split=split)


def _path(directory: Path, name: str, split: str) -> Path:
    return directory / f"{name}_{split}.{'txt' if name in ('general', 'domain') else 'jsonl'}"


def write_corpora(out_dir) -> dict[str, Path]:
    """Write the sample files (seed 0) into out_dir; return {"general_train": path, ...}.
    .txt: one document per paragraph (blank-line separated); .jsonl: one item per line."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in NAMES:
        for split in SPLITS:
            items, path = _sample(name, split), _path(out_dir, name, split)
            if path.suffix == ".txt":
                text = "\n\n".join(items) + "\n"
            else:
                text = "".join(json.dumps(x) + "\n" for x in items)
            path.write_bytes(text.encode("ascii"))
            paths[f"{name}_{split}"] = path
    return paths


def load(name: str, split: str = "train") -> list:
    """Read a committed sample file from data/corpora: list of str for the corpora, list of dicts otherwise."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = _path(CORPORA_DIR, name, split)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with: python -m labkit data")
    text = path.read_text(encoding="ascii")
    if path.suffix == ".txt":
        return [d.strip() for d in text.split("\n\n") if d.strip()]
    return [json.loads(line) for line in text.splitlines() if line.strip()]
