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
``labkit.data_templates``; this package is the code that draws documents and items from them.
Which lab uses what: ``general_corpus`` pretrained lab-tiny and feeds labs 03 §9, 10 §5, 11 §5
and 15 §6; ``fact_probes`` measure it (lab 00 §6, lab 06 §4, lab 11 §8); ``domain_corpus`` is the
fine-tuning set of lab 06; ``domain_fact_instructions`` is the knowledge task of lab 04 §3 (and
labs 05 §9, 13 §4); ``instructions`` and ``dialogues`` are the SFT data of lab 09 and lab 16 §5;
``word_problems`` and ``APPLES_PROBLEM`` are the chain-of-thought task of lab 08 §4; ``load``
reads the committed samples (labs 02, 05, 06, 09, 16).

One module per role, every name re-exported here, so ``from labkit import data; data.load("general")``
reads the same as before the split:

* `english` -- the articles, capitals, persons and word lists every generator shares;
* `splits` -- ``SPLITS``, `split_of` and the draw loop every generator runs (lab 09 §6, lab 14 §13);
* `facts` -- ``FACTS``, ``DOMAIN_FACTS``, `fact_sentence` and the probes (lab 00 §6, lab 06 §4);
* `corpora` -- `general_corpus` and `domain_corpus` (lab 03 §9, lab 06, lab 15 §6);
* `instructions` -- checkable instructions and `domain_fact_instructions` (lab 04 §3, lab 09, lab 16 §5);
* `dialogues` -- multi-turn chats whose follow-ups need the history (lab 09 §3, §6);
* `word_problems` -- GSM8K-style problems and ``APPLES_PROBLEM`` (lab 08 §4-6);
* `sample_files` -- ``CORPORA_DIR``, `write_corpora` and `load` for the committed files
  (labs 02, 05, 06, 09, 16).

Regenerate the committed sample files in ``data/corpora/`` with::

    python -m labkit data
"""
from __future__ import annotations

# the world's tables, imported by the old single module and so reachable as ``data.<TABLE>``
from ..data_templates import (  # noqa: F401
    COUNTRIES, BIRDS, PEOPLE, MACHINES, RELATIONS, FEMALE, MALE, TOWNS, RIVER_OF, JOBS, PLACES,
    ANIMALS, PRODUCE, GROCERIES, SPICES, DISHES, OBJECTS, RELATIVES, TOPICS, TIMES, WEEKDAYS,
    SEASONS, TRANSPORT, SCENERY, WEATHER, FEELINGS, ACTIVITIES, TOGETHER, ADJ, TOWN_ADJ, NUMBERS,
    INSTRUMENTS, BUILDINGS, THEMES, THEME_NAMES, BRIDGES, BRIDGE_OF, PURPOSE, PARTS, CONDITIONS,
    CAUSES, TOOLS, DOMAIN_THEMES, DOMAIN_THEME_NAMES, ORDER_WORDS, FACT_QUESTIONS, OPPOSITE_OF,
    SIMPLE_WORDS, DOMAIN_QUESTIONS, FOLLOW_UPS, ITEMS, GROUPS, ADD_VERBS, CONTAINERS, VERB_FORMS,
)
# the private names (underscored) are those of the old single module, still importable here
from .english import _a, _cap, _count_answer, _person, _some_words  # noqa: F401
from .splits import SPLITS, _check, _draw, split_of  # noqa: F401
from .facts import DOMAIN_FACTS, FACTS, _Deck, _fact_cards, domain_probes, fact_probes, fact_sentence  # noqa: F401
from .corpora import (_assemble, _domain_context, _domain_doc, _fact_block, _finish, _general_doc,  # noqa: F401
                      _middles, _story_context, domain_corpus, general_corpus)
from .instructions import (_FACT_QUESTIONS, _OPPOSITE_OF, _TASKS, _instruction, _task_add, _task_count,  # noqa: F401
                           _task_fact, _task_multiply, _task_opposite, _task_repeat, _task_reverse, _task_sort,
                           _task_subtract, domain_fact_instructions, instructions, task_add)
from .dialogues import (_DIALOGUE_KINDS, _dialogue, _dialogue_split, _dlg_arithmetic, _dlg_country,  # noqa: F401
                        _dlg_person, _dlg_same_relation, _dlg_words, dialogues)
from .word_problems import APPLES_PROBLEM, _verb, _word_problem, _wp_step, word_problems  # noqa: F401
from .sample_files import CORPORA_DIR, NAMES, _SAMPLE_SIZES, _path, _sample, load, write_corpora  # noqa: F401

__all__ = ["SPLITS", "NAMES", "CORPORA_DIR", "FACTS", "DOMAIN_FACTS", "FACT_QUESTIONS", "APPLES_PROBLEM",
           "fact_sentence", "fact_probes", "domain_probes", "split_of", "general_corpus", "domain_corpus",
           "task_add", "instructions", "domain_fact_instructions", "dialogues", "word_problems",
           "write_corpora", "load"]
