"""The lab's retrieval task: the corpus, the questions, which chunks are relevant, the answers (lab 15 §5, §7).

Why a module: lab 15 measures retrieval and reading on its own world, so the questions have
known answers. `lab_corpus` is the `labkit.data` stories and maintenance records (plus real
English); `fact_question` / `qa_set` ask about the facts they state, `answer_bearing` marks the
relevant chunks (§5); `answer_match` and `is_refusal` grade a reader's reply (§7);
`training_pairs` gives the bi-encoder its (question, chunk) pairs without the test questions (§6).
"""
from __future__ import annotations

import re

from ..errors import LabkitError
from .checks import _check_text, _positive_int

__all__ = ["QUESTIONS", "fact_question", "lab_corpus", "answer_bearing", "qa_set", "answer_match", "is_refusal",
           "training_pairs"]


QUESTIONS = {
    "capital": "What is the capital of {e}?",
    "language": "What language do people speak in {e}?",
    "river": "Which river flows through {e}?",
    "colour": "What colour are the feathers of the {e}?",
    "job": "What does {e} do for a living?",
    "born": "In which town was {e} born?",
    "lubricant": "What is the {e} lubricated with?",
    "weak_part": "Which part of the {e} fails first?",
    "maker": "Which company makes the {e}?",
    "overheat_code": "Which code does the {e} show when it overheats?",
}


def fact_question(entity: str, relation: str) -> str:
    """The question that asks for a fact of `labkit.data`: ``("Veloria", "capital")`` ->
    ``"What is the capital of Veloria?"``."""
    if relation not in QUESTIONS:
        raise LabkitError(f"unknown relation {relation!r}; one of {sorted(QUESTIONS)}")
    return QUESTIONS[relation].format(e=entity)


def lab_corpus(n_general: int, n_domain: int, seed: int = 0, real: bool = True) -> list[dict]:
    """The documents to search: ``n_general`` stories and ``n_domain`` maintenance records of
    `labkit.data` (they state the lab world's facts) and, with ``real``, the eight paragraphs of
    real English of `labkit.perplexity.real_english`. Each: ``{"text", "source"}``."""
    from .. import data, perplexity

    docs = [{"text": t, "source": "general"} for t in data.general_corpus(n_general, seed=seed)]
    docs += [{"text": t, "source": "domain"} for t in data.domain_corpus(n_domain, seed=seed)]
    if real:
        docs += [{"text": t, "source": "real"} for t in perplexity.real_english()]
    return docs


def _mentions(text: str, phrase: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)", text.lower()) is not None


def answer_bearing(chunks, entity: str, answer: str) -> list[int]:
    """Ids of the chunks that name both the entity and the answer (whole words, any case): the
    *relevant* chunks of a question, the usual definition when passages are not labelled."""
    return [i for i, c in enumerate(chunks) if _mentions(c, entity) and _mentions(c, answer)]


def qa_set(chunks, n: int, facts=None, present: bool = True) -> list[dict]:
    """Up to ``n`` questions about the lab's facts, alternating world and machine facts.

    ``present=True``: facts stated in some chunk (``relevant`` = the answer-bearing chunk ids);
    ``False``: facts no chunk states (for refusals: the right reply is "I don't know").
    Each: ``{"question", "answer", "entity", "relation", "relevant"}``.
    """
    from .. import data

    _positive_int(n, "n")
    pools = [list(data.FACTS), list(data.DOMAIN_FACTS)] if facts is None else [list(facts)]
    picked = [[], []]
    for p, pool in enumerate(pools):
        for entity, relation, answer in pool:
            relevant = answer_bearing(chunks, entity, answer)
            if bool(relevant) == present:
                picked[p].append({"question": fact_question(entity, relation), "answer": answer, "entity": entity,
                                  "relation": relation, "relevant": relevant})
    out = []
    for i in range(max(len(p) for p in picked)):
        out += [p[i] for p in picked if i < len(p)]
    return out[:n]


_REFUSAL = re.compile(r"(do not|don't|does not|doesn't|cannot|can't|not) (know|say|mention|state|provide|"
                      r"contain|answer|find|determine|sure)|no information|not (mentioned|stated|given|provided|"
                      r"specified|found)|unknown|not in the (context|text)", re.IGNORECASE)


def answer_match(reply: str, answer: str) -> bool:
    """The reply contains the gold answer as a whole word (any case): "The capital is Marden." for
    "Marden". (Strict exact match would fail every full-sentence reply of a small chat model.)"""
    _check_text(reply, "reply")
    return _mentions(reply, answer)


def is_refusal(reply: str) -> bool:
    """The reply declines: "I don't know", "the context does not say", "not mentioned", ..."""
    _check_text(reply, "reply")
    return _REFUSAL.search(reply) is not None


def training_pairs(chunks, exclude=()) -> list[tuple[str, str]]:
    """(question, chunk) for every fact of `labkit.data` a chunk states, leaving out the facts
    whose entity is in ``exclude`` (the evaluation questions' entities: no peeking)."""
    from .. import data

    skip = set(exclude)
    pairs = []
    for entity, relation, answer in list(data.FACTS) + list(data.DOMAIN_FACTS):
        if entity in skip:
            continue
        for i in answer_bearing(chunks, entity, answer):
            pairs.append((fact_question(entity, relation), chunks[i]))
    return pairs
