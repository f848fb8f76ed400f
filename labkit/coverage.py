"""Which tokens did a model never train on? And a pretraining mix that leaves none.

An embedding row that never received a gradient is still its random
initialisation. ``lab-tiny`` was first pretrained on the general corpus alone, so
every token that only the other lab corpora use -- digits of the word
problems, the chat-template markers, dialogue and instruction words, the
domain's machine vocabulary -- was such a row: 399 of the 1,552 token types
the lab corpora contain (measured by `report` on the committed corpora and
lab-tiny's 100,000 training documents). The committed lab-tiny was then
continued on `coverage_mix`, which leaves 0 (its ``training.json`` records both). Labs that fine-tune on those corpora
then confound "learning the task" with "learning what the token is" (lab 06
saw LoRA adapters fail to learn new tokens at all).

`coverage_mix` is the fix's data: the general corpus, plus chat-rendered
instructions and dialogues, word problems with their worked solutions, and
short word lists that use every domain word outside its domain context (so an
embedding row is trained without teaching the domain's facts, which lab 06
measures as new knowledge). All non-general items are drawn from the *train*
split with seeds other than the committed samples'.
``python -m labkit pretrain --init-from lab-tiny --mix coverage`` continues
lab-tiny's pretraining on it.
"""
from __future__ import annotations

import random

from . import data
from .errors import LabkitError

MIX = {"general": 0.70, "instructions": 0.09, "dialogues": 0.09, "word_problems": 0.07, "domain_words": 0.05}
_OTHER_SEED = 1000  # items for the mix come from seeds the committed sample files do not use


def chat_text(tokenizer, example: dict) -> str:
    """An instruction or dialogue item as the labs feed it: rendered by the chat template."""
    from .sft import messages

    return tokenizer.apply_chat_template(messages(example), tokenize=False)


def lab_texts(tokenizer, split: str | None = None) -> list[str]:
    """Every text the labs put through a lab model, as they render it (both splits by default)."""
    out = []
    for split_name in ([split] if split else list(data.SPLITS)):
        out += data.load("general", split_name) + data.load("domain", split_name)
        out += [chat_text(tokenizer, x) for x in data.load("instructions", split_name)]
        out += [chat_text(tokenizer, x) for x in data.load("dialogues", split_name)]
        out += [f"{x['question']}\n{x['solution']}" for x in data.load("word_problems", split_name)]
    return out


def token_ids(tokenizer, texts: list[str]) -> set[int]:
    """The set of token ids that ``texts`` use (with the bos/eos that `train.pack_documents` adds)."""
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    for row in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.update(row)
    return ids


def report(tokenizer, training_texts: list[str]) -> dict:
    """How many token types of the lab corpora the training texts never show."""
    used = token_ids(tokenizer, lab_texts(tokenizer))
    trained = token_ids(tokenizer, training_texts)
    missing = sorted(used - trained)
    return {"vocab_size": len(tokenizer), "lab_corpus_token_types": len(used),
            "trained_token_types": len(trained), "untrained_in_lab_corpora": len(missing),
            "untrained_examples": tokenizer.convert_ids_to_tokens(missing[:20])}


def _domain_words(seed: int) -> list[str]:
    words = set()
    for doc in data.domain_corpus(600, seed=_OTHER_SEED + seed):
        words.update(w.strip(".,;:!?()\"'") for w in doc.split())
    return sorted(w for w in words if w)


def _word_list_docs(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Domain words used outside the domain: plain lists, no machine, no procedure, no fact."""
    people = ["Anna", "Gus", "Emma", "Tom", "Greta", "Lina", "Omar", "Ivy"]
    frames = ["{p} wrote some words on a card: {w}.", "Here is a list of words: {w}.",
              "{p} read the words {w} out loud.", "The words of the day were {w}."]
    docs = []
    for i in range(n):
        chosen = rng.sample(words, k=min(len(words), rng.randint(4, 8)))
        if i % 3 == 0:  # a word at the very start of a text tokenizes without its leading space
            first = chosen[0][:1].upper() + chosen[0][1:]
            docs.append(f"{first} and {', '.join(chosen[1:])} are words on {rng.choice(people)}'s list.")
        else:
            docs.append(rng.choice(frames).format(p=rng.choice(people), w=", ".join(chosen)))
    return docs


def coverage_mix(tokenizer, n_docs: int, seed: int = 0, mix: dict | None = None) -> list[str]:
    """``n_docs`` training documents in the proportions of ``mix`` (default `MIX`), shuffled."""
    mix = mix or MIX
    if n_docs < len(mix):
        raise LabkitError(f"a coverage mix needs at least {len(mix)} documents, got {n_docs}")
    if abs(sum(mix.values()) - 1) > 1e-6:
        raise LabkitError(f"mix proportions must add up to 1, got {sum(mix.values()):.3f}")
    counts = {k: max(1, round(v * n_docs)) for k, v in mix.items()}
    s = _OTHER_SEED + seed
    docs = data.general_corpus(counts["general"], seed=seed)
    bos = tokenizer.bos_token or ""
    chats = data.instructions(counts["instructions"], seed=s) + data.dialogues(counts["dialogues"], seed=s)
    docs += [chat_text(tokenizer, x).removeprefix(bos) for x in chats]  # pack_documents adds <bos> itself
    docs += [f"{x['question']}\n{x['solution']}" for x in data.word_problems(counts["word_problems"], seed=s)]
    rng = random.Random(s)
    docs += _word_list_docs(_domain_words(seed), counts["domain_words"], rng)
    docs += _fill_gaps(tokenizer, docs, rng)
    rng.shuffle(docs)
    return docs


def _fill_gaps(tokenizer, docs: list[str], rng: random.Random) -> list[str]:
    """One short list document for each token the lab corpora use that ``docs`` still miss.

    Such tokens are rare word pieces, often ones that only occur at the start of a
    text or a line ("Service record ...", "Reverse ..."), where a word has no
    leading space: find a word of the lab corpora that contains the piece, and put
    it in a word list at the start and in the middle (a bare word, never a test
    item's text)."""
    texts = lab_texts(tokenizer)
    missing = token_ids(tokenizer, texts) - token_ids(tokenizer, docs)
    if not missing:
        return []
    words = sorted({w.strip(".,;:!?()\"'") for t in texts for w in t.split()} - {""})
    pool = rng.sample(words, k=min(40, len(words)))
    extra = []
    for word in words:
        pieces = tokenizer([word, " " + word], add_special_tokens=False)["input_ids"]
        hit = missing & set(pieces[0] + pieces[1])
        if hit:  # the word first (no leading space), then again mid-sentence (with one)
            extra.append(f"{word} is on the list, and so are {word}, {', '.join(rng.sample(pool, k=3))}.")
            missing -= hit
        if not missing:
            break
    return extra
