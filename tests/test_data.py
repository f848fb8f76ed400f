"""Tests for labkit.data: determinism, disjoint splits, checkable answers, committed files."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import data

GENERATORS = {
    "general": (data.general_corpus, lambda d: d),
    "domain": (data.domain_corpus, lambda d: d),
    "instructions": (data.instructions, lambda d: d["prompt"]),
    "dialogues": (data.dialogues, lambda d: d["prompt"]),
    "word_problems": (data.word_problems, lambda d: d["question"]),
}
EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def _sentences(doc: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.?!]) (?=[A-Z])", doc) if s]


@pytest.fixture(scope="module")
def general():
    return data.general_corpus(3000)


@pytest.fixture(scope="module")
def domain():
    return data.domain_corpus(1500)


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("name", GENERATORS)
def test_same_arguments_same_output(name):
    make, _ = GENERATORS[name]
    assert make(50, seed=3) == make(50, seed=3)
    assert make(50, seed=3) != make(50, seed=4)
    assert make(10, seed=3, split="test") == make(10, seed=3, split="test")


def test_prefix_stable():
    """Asking for more items extends the list rather than changing it."""
    assert data.general_corpus(200)[:50] == data.general_corpus(50)
    assert data.word_problems(100, split="test")[:20] == data.word_problems(20, split="test")


def test_independent_of_python_hash_seed():
    code = ("import hashlib, json; from labkit import data; "
            "print(hashlib.sha1(json.dumps([data.general_corpus(100), data.domain_corpus(50), data.instructions(100), "
            "data.dialogues(100), data.word_problems(100)]).encode()).hexdigest())")
    root = Path(data.__file__).resolve().parent.parent
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outs) == 1


# ------------------------------------------------------------------ splits
@pytest.mark.parametrize("name", GENERATORS)
def test_splits_are_disjoint(name):
    make, key = GENERATORS[name]
    train = make(400, seed=0) + make(400, seed=1)
    test = make(60, seed=0, split="test") + make(60, seed=7, split="test")
    train_keys, test_keys = {key(x) for x in train}, {key(x) for x in test}
    assert not train_keys & test_keys
    assert all(data.split_of(k) == "train" for k in train_keys)
    assert all(data.split_of(k) == "test" for k in test_keys if k != data.APPLES_PROBLEM["question"])
    assert len({json.dumps(x) for x in make(400, seed=0)}) == 400  # no duplicates within one call


def test_split_of_is_the_documented_hash():
    import hashlib

    for text in ["", "hello", "The capital of Veloria is Marden."]:
        expected = "test" if int(hashlib.sha1(text.encode()).hexdigest(), 16) % 10 == 0 else "train"
        assert data.split_of(text) == expected


def test_no_test_prompt_anywhere_in_training_dialogues():
    test_prompts = {d["prompt"] for d in data.dialogues(200, split="test")}
    for d in data.dialogues(1000):
        assert not test_prompts & ({d["prompt"]} | {u for u, _ in d["history"]})


# ------------------------------------------------------------------ corpora
@pytest.mark.parametrize("corpus", ["general", "domain"])
def test_documents_are_short_ascii_english(corpus, request):
    docs = request.getfixturevalue(corpus)
    for doc in docs:
        assert doc.isascii() and "\n" not in doc
        assert 40 <= len(doc.split()) <= 120, doc
        assert 3 <= len(_sentences(doc)) <= 8, doc
        assert doc[0].isupper() and doc.endswith(".")


def test_general_vocabulary_size(general):
    words = {w.strip(".,?").lower() for doc in general for w in doc.split()}
    assert 800 <= len(words) <= 3000


def test_domain_vocabulary_differs(general, domain):
    def vocab(docs):
        return {w.strip(".,?:").lower() for doc in docs for w in doc.split()}

    g, d = vocab(general), vocab(domain)
    assert len(d - g) > 100  # many domain-only words (gasket, torque, rpm, ...)
    assert "gasket" in d and "gasket" not in g


def test_facts_and_probes():
    assert len(data.FACTS) == 150 and len(set(data.FACTS)) == 150
    assert len({r for _, r, _ in data.FACTS}) >= 4
    for probes, facts in [(data.fact_probes(), data.FACTS), (data.domain_probes(), data.DOMAIN_FACTS)]:
        assert len(probes) == len(facts) == len({p for p, _ in probes})
        for prompt, answer in probes:
            assert answer and " " not in answer and not prompt.endswith(" ")
    assert ("The capital of Veloria is", "Marden") in data.fact_probes()


@pytest.mark.parametrize("corpus", ["general", "domain"])
def test_canonical_probes_appear_in_corpus(corpus, request):
    docs = request.getfixturevalue(corpus)
    probes = data.fact_probes() if corpus == "general" else data.domain_probes()
    facts = data.FACTS if corpus == "general" else data.DOMAIN_FACTS
    text = "\n".join(docs)
    found = sum(f"{p} {a}." in text for p, a in probes)
    assert found >= 0.95 * len(probes)
    for entity, _, attribute in facts:  # every fact is stated somewhere, in some phrasing
        assert any(entity in d and attribute in d for d in docs), entity
    share = sum(any(e in d and a in d for e, _, a in facts) for d in docs) / len(docs)
    assert 0.2 <= share <= 0.6


# ------------------------------------------------------------------ instructions
def _check_instruction(item):
    p, r, task = item["prompt"], item["response"], item["task"]
    nums = [int(x) for x in re.findall(r"\d+", p)]
    words = p.split(": ", 1)[-1].split()
    if task in ("add", "subtract", "multiply"):
        a, b = (nums[1], nums[0]) if p.startswith(("Subtract", "Take")) else nums
        op = {"add": ("plus", a + b), "subtract": ("minus", a - b), "multiply": ("times", a * b)}[task]
        assert r == f"{a} {op[0]} {b} is {op[1]}." and op[1] >= 0
    elif task == "reverse":
        assert r == " ".join(words[::-1])
    elif task == "repeat":
        assert r == " ".join(words)
    elif task == "sort":
        assert r == " ".join(sorted(words))
    elif task == "count":
        assert r in (f"There are {len(words)} words.", "There is 1 word.")
    elif task == "opposite":
        word = p.rstrip("?.").split()[-1]
        assert data._OPPOSITE_OF[r] == word
    elif task == "fact":
        assert r in {data.fact_sentence(*f) for f in data.FACTS}
    else:
        raise AssertionError(f"unknown task {task}")


def test_instructions_are_checkable():
    items = data.instructions(2000) + data.instructions(200, split="test")
    assert len({x["task"] for x in items}) >= 6
    for item in items:
        assert set(item) == {"prompt", "response", "task"}
        _check_instruction(item)
    assert {"prompt": "What is the capital of Veloria?", "response": "The capital of Veloria is Marden.", "task": "fact"} \
        in data.instructions(4000) + data.instructions(400, split="test")


# ------------------------------------------------------------------ dialogues
def test_dialogue_shape_and_arithmetic():
    dialogues = data.dialogues(600) + data.dialogues(100, split="test")
    assert {len(d["history"]) + 1 for d in dialogues} == {1, 2, 3, 4}
    for d in dialogues:
        assert set(d) == {"prompt", "response", "history"}
        assert isinstance(d["prompt"], str) and isinstance(d["response"], str)
        assert all(isinstance(t, list) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in d["history"])
        turns = d["history"] + [[d["prompt"], d["response"]]]
        if re.fullmatch(r"\d+ plus \d+ is \d+\.", turns[0][1]):  # running arithmetic stays consistent
            total = None
            for _, answer in turns:
                a, op, b, result = re.fullmatch(r"(\d+) (plus|minus|times) (\d+) is (\d+)\.", answer).groups()
                a, b, result = int(a), int(b), int(result)
                assert total is None or a == total
                assert result == {"plus": a + b, "minus": a - b, "times": a * b}[op] >= 0
                total = result


# ------------------------------------------------------------------ word problems
def _check_problem(p):
    assert set(p) == {"question", "steps", "solution", "answer", "n_steps"}
    assert 1 <= p["n_steps"] == len(p["steps"]) <= 5
    previous = None
    for i, step in enumerate(p["steps"]):
        eqs = EQUATION.findall(step)
        assert len(eqs) == 1 and step.endswith("."), step
        a, op, b, c = eqs[0]
        a, b, c = int(a), int(b), int(c)
        expected = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        assert c == expected and (op != "/" or a % b == 0), step
        assert i == 0 or a == previous  # each step continues from the last result
        assert 0 <= c < 1000
        previous = c
    assert previous == p["answer"]
    assert p["solution"] == " ".join(p["steps"]) + f" The answer is {p['answer']}."
    assert p["question"].endswith("?") and p["question"].isascii()


def test_word_problem_arithmetic():
    problems = data.word_problems(1500) + data.word_problems(200, split="test")
    for p in problems:
        _check_problem(p)
    assert {p["n_steps"] for p in problems} == {1, 2, 3, 4, 5}
    ops = {EQUATION.search(s).group(2) for p in problems for s in p["steps"]}
    assert ops == {"+", "-", "*", "/"}
    assert len({p["question"].split()[2] for p in problems}) > 10  # varied entities/wording


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_n_steps_filter(k):
    problems = data.word_problems(60, n_steps=k) + data.word_problems(20, split="test", n_steps=k)
    assert all(p["n_steps"] == k for p in problems)


def test_apples_problem():
    _check_problem(data.APPLES_PROBLEM)
    assert data.APPLES_PROBLEM["answer"] == 9 and data.APPLES_PROBLEM["n_steps"] == 2
    assert data.word_problems(5, split="test")[0] == data.APPLES_PROBLEM
    assert data.word_problems(5, split="test", n_steps=2)[0] == data.APPLES_PROBLEM
    assert data.word_problems(1, split="test") == [data.APPLES_PROBLEM]
    assert data.APPLES_PROBLEM not in data.word_problems(5, split="test", n_steps=3)
    assert data.APPLES_PROBLEM not in data.word_problems(3000)
    assert data.word_problems(0, split="test") == []


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call", [
    lambda: data.general_corpus(5, split="dev"),
    lambda: data.domain_corpus(-1),
    lambda: data.instructions(3, split="validation"),
    lambda: data.dialogues(-2),
    lambda: data.word_problems(3, n_steps=0),
    lambda: data.word_problems(3, n_steps=6),
    lambda: data.word_problems(3, split="eval"),
    lambda: data.load("wikipedia"),
    lambda: data.load("general", "dev"),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError) as err:
        call()
    assert "\n" not in str(err.value) and ("must be" in str(err.value))


# ------------------------------------------------------------------ committed files
def test_committed_files_match_regeneration(tmp_path):
    written = data.write_corpora(tmp_path)
    assert len(written) == 2 * len(data.NAMES)
    for key, path in written.items():
        name, split = key.rsplit("_", 1)
        committed = data.CORPORA_DIR / path.name
        assert committed.exists(), f"{committed} missing: run python -m labkit data"
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run python -m labkit data"
        assert path.stat().st_size < 2**20
        loaded = data.load(name, split)
        assert loaded and loaded == data._sample(name, split)
    assert os.path.getsize(written["general_train"]) <= 900_000
    assert os.path.getsize(written["domain_train"]) <= 500_000
    assert data.load("word_problems", "test")[0] == data.APPLES_PROBLEM
    assert len(data.load("general", "test")) == 500


def test_domain_fact_instructions_hold_out_wordings_not_facts():
    """Lab 04's knowledge task: every fact is taught; val/test ask taught facts in an unseen wording."""
    import pytest

    from labkit import data

    split = data.domain_fact_instructions()
    fit, val, test = split["fit"], split["val"], split["test"]
    assert (len(val), len(test)) == (16, 32) and len(fit) == len(data.DOMAIN_FACTS) + len(data.DOMAIN_FACTS) - 48
    fit_prompts = {x["prompt"] for x in fit}
    assert not fit_prompts & {x["prompt"] for x in val + test}           # no held-out question is trained
    assert {x["response"] for x in fit} == {data.fact_sentence(*f) for f in data.DOMAIN_FACTS}  # every fact taught
    assert {x["response"] for x in val + test} <= {x["response"] for x in fit}
    assert not {x["response"] for x in val} & {x["response"] for x in test}
    assert all(x["task"] == "domain_fact" and x["prompt"].endswith("?") for x in fit + val + test)
    assert data.domain_fact_instructions() == split                        # deterministic
    assert data.domain_fact_instructions(seed=1)["test"] != test
    brenna = [x for x in fit if x["prompt"] == "Who makes the Brenna pump?"]
    assert brenna and brenna[0]["response"] == "The Brenna pump is made by Halvik."
    with pytest.raises(ValueError, match="n_val"):
        data.domain_fact_instructions(n_val=60, n_test=30)
