"""labkit.prompting: answer extraction, prompt text, Wilson intervals, voting, the harness, errors."""
import json
import math

import pytest
import torch

from labkit import data, prompting as P
from labkit.errors import LabkitError

APPLES = data.APPLES_PROBLEM


# --------------------------------------------------------------------------- extract_answer
@pytest.mark.parametrize("text, expected", [
    ("They used 20, so 23 - 20 = 3. They bought 6 more, so 3 + 6 = 9. The answer is 9.", "9"),
    ("The answer is 9", "9"),
    (" The answer is 1,234.", "1234"),
    ("Therefore, the answer (arabic numerals) is 42.", "42"),
    ("Therefore, the answer (arabic numerals) is -7.", "-7"),
    ("The answer is 3.75.", "3.75"),
    ("The answer is 2.50", "2.5"),
    ("The answer is 12.0.", "12"),
    ("The answer is $18.", "18"),
    ("the answer is: 5", "5"),
    ("The answer is **64**.", "64"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("#### 1,000,000", "1000000"),
    ("The answer is 4. Wait, no. The answer is 5.", "5"),            # the last statement counts
    ("so 3 + 6 = 9.", None),                                          # no answer statement: no guess
    ("The answer is unknown.", None),
    ("", None),
    (None, None),
])
def test_extract_answer(text, expected):
    assert P.extract_answer(text) == expected


def test_normalize_number():
    assert [P.normalize_number(s) for s in ("1,234.", "-5", "0.50", "100", "3.")] == ["1234", "-5", "0.5", "100", "3"]


# --------------------------------------------------------------------------- prompt builders
def test_prompt_builders_exact_text():
    q = APPLES["question"]
    assert P.direct(q) == f"Q: {q}\nA: The answer is"
    assert P.zero_shot_cot(q) == f"Q: {q}\nA: Let's think step by step."
    assert P.zero_shot_cot_stage2(q, " They used 20, so 23 - 20 = 3. ") == (
        f"Q: {q}\nA: Let's think step by step. They used 20, so 23 - 20 = 3. "
        "Therefore, the answer (arabic numerals) is")
    assert P.least_to_most(q) == f"Q: {q}\nA: Let's break down this problem."
    assert P.least_to_most_stage2(q, "1. How many?") == (
        f"Q: {q}\nA: Let's break down this problem. 1. How many?\nNow solve them in order.")
    assert P.self_consistency(q, 3) == [P.zero_shot_cot(q)] * 3


def test_few_shot_prompt_uses_k_train_exemplars():
    q = APPLES["question"]
    shots = P.exemplars(2)
    assert P.few_shot_cot(q, 2) == (f"Q: {shots[0]['question']}\nA: {shots[0]['solution']}\n\n"
                                    f"Q: {shots[1]['question']}\nA: {shots[1]['solution']}\n\nQ: {q}\nA:")
    assert P.few_shot_cot(q, 0) == f"Q: {q}\nA:"
    assert all(data.split_of(e["question"]) == "train" for e in P.exemplars(8))


def test_least_to_most_decomposition_of_the_apples_problem():
    assert P.subquestions(APPLES) == ["How many apples after they used 20?",
                                      "How many apples after they bought 6 more?"]
    assert P.decomposition_text(APPLES) == ("1. How many apples after they used 20? "
                                            "2. How many apples after they bought 6 more?")
    assert P.solved_in_order_text(APPLES) == ("1. They used 20, so 23 - 20 = 3. "
                                              "2. They bought 6 more, so 3 + 6 = 9. The answer is 9.")
    box = {"question": "Ann has 3 packs of beads with 7 in each. How many beads does she have?",
           "steps": ["There are 3 packs of 7, so 3 * 7 = 21."]}
    assert P.subquestions(box) == ["How many beads are in 3 packs of 7?"]


# --------------------------------------------------------------------------- statistics
def test_wilson_ci_matches_hand_computation():
    z = 1.96
    n, c = 10, 7
    p = c / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = P.wilson_ci(7, 10)
    assert lo == pytest.approx(0.396773, abs=1e-6) and hi == pytest.approx(0.892211, abs=1e-6)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert P.wilson_ci(0, 10) == pytest.approx((0.0, 0.384160 / 1.384160), abs=1e-6)   # not (0, 0)
    assert P.wilson_ci(10, 10)[1] == pytest.approx(1.0) and P.wilson_ci(10, 10)[0] < 1.0


def test_majority_vote():
    assert P.majority_vote(["7", "8", "7", None]) == "7"
    assert P.majority_vote(["8", "7"]) == "8"           # tie: the first seen
    assert P.majority_vote([None, None]) is None


def test_self_consistency_votes_with_a_stub_generator():
    calls = []

    def stub(prompts, max_new, temperature=0.0, seed=0, stop=None):
        calls.append((len(prompts), temperature))
        texts = ["so 9. The answer is 9.", "The answer is 8.", "so 9. The answer is 9.", "no idea", "The answer is 8."]
        return [(texts[i % 5], 4) for i in range(len(prompts))]

    res = P.evaluate(None, None, [APPLES, {**APPLES, "answer": 8}], "self_consistency", n=5,
                     temperature=0.9, generate=stub, progress=False)
    assert calls == [(10, 0.9)]
    assert [r.extracted for r in res.records] == ["9", "9"]
    assert [r.correct for r in res.records] == [True, False]
    assert res.records[0].samples == ["9", "8", "9", None, "8"]
    assert res.records[0].tokens == 20 and res.accuracy == 0.5


def test_zero_shot_cot_runs_two_stages_with_a_stub():
    prompts_seen = []

    def stub(prompts, max_new, temperature=0.0, seed=0, stop=None):
        prompts_seen.append(list(prompts))
        if len(prompts_seen) == 1:
            return [(" They used 20, so 23 - 20 = 3. They bought 6 more, so 3 + 6 = 9. The answer is 9.", 30)]
        return [(" 9.", 3)]

    rec = P.evaluate(None, None, [APPLES], "zero_shot_cot", generate=stub, progress=False).records[0]
    assert prompts_seen[1] == [P.zero_shot_cot_stage2(
        APPLES["question"], "They used 20, so 23 - 20 = 3. They bought 6 more, so 3 + 6 = 9.")]
    assert rec.extracted == "9" and rec.correct and rec.tokens == 33


def test_diagnose_finds_the_first_wrong_step():
    wrong = "They used 20, so 23 - 20 = 3. They bought 6 more, so 3 + 6 = 8. The answer is 8."
    d = P.diagnose(APPLES, wrong)
    assert (d["first_wrong_step"], d["kind"]) == (2, "arithmetic")
    d = P.diagnose(APPLES, "They used 20, so 23 - 2 = 21. They bought 6 more, so 21 + 6 = 27. The answer is 27.")
    assert (d["first_wrong_step"], d["kind"]) == (1, "wrong operand")
    assert P.diagnose(APPLES, "They used 20, so 23 - 20 = 3.")["kind"] == "too few steps"
    assert P.diagnose(APPLES, "The answer is 12.")["kind"] == "no steps"


# --------------------------------------------------------------------------- errors
def test_unknown_strategy_is_one_line():
    with pytest.raises(LabkitError, match="unknown strategy 'cot'; use one of direct, zero_shot_cot"):
        P.evaluate(None, None, [APPLES], "cot")


def test_prompt_longer_than_context_says_what_to_do(cot_model):
    model, tok = cot_model
    with pytest.raises(LabkitError, match=r"few_shot_cot prompt is \d+ tokens .* context of 512; use fewer shots"):
        P.evaluate(model, tok, [APPLES], "few_shot_cot", k=8, progress=False)


def test_labkit_model_that_is_not_a_causal_lm(tmp_path, monkeypatch):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    monkeypatch.setenv("LABKIT_MODEL", str(tmp_path))
    with pytest.raises(LabkitError, match="not a causal LM"):
        P.load_model()
    monkeypatch.setenv("LABKIT_MODEL", str(tmp_path / "nothing-here"))
    with pytest.raises(LabkitError, match="does not exist"):
        P.load_model()


# --------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def cot_model():
    return P.load_model("lab-cot")


def test_committed_model_reasons_step_by_step(cot_model):
    model, tok = cot_model
    res = P.evaluate(model, tok, [APPLES], "zero_shot_cot", progress=False)
    rec = res.records[0]
    assert rec.completion.startswith(" They used 20, so 23 - 20 = 3.")
    assert rec.extracted == "9" and rec.correct
    assert json.loads((P.Path(P.__file__).parent.parent / "data/models/lab-cot/training.json").read_text())["command"]


def test_committed_model_on_held_out_problems_returns_records(cot_model):
    model, tok = cot_model
    problems = P.held_out(3, 3)
    for strategy in ("direct", "few_shot_cot", "least_to_most"):
        res = P.evaluate(model, tok, problems, strategy, progress=False)
        assert res.n == 3 and all(r.gold == str(p["answer"]) for r, p in zip(res.records, problems))
        assert all(r.correct == (r.extracted == r.gold) for r in res.records)
        assert res.row()["ci_low"] <= res.accuracy <= res.row()["ci_high"]
    direct = P.evaluate(model, tok, problems, "direct", progress=False)
    assert all(r.tokens <= 8 for r in direct.records)


def test_harness_runs_a_local_hf_causal_lm(tmp_path, monkeypatch):
    """LABKIT_MODEL -> a tiny random Llama saved with its tokenizer (chat template): no download."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from labkit.tokenizer import load_tokenizer

    cfg = LlamaConfig(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    load_tokenizer().save_pretrained(tmp_path)
    monkeypatch.setenv("LABKIT_MODEL", str(tmp_path))
    model, tok = P.load_model()
    assert model.config.hidden_size == 32
    for strategy in ("direct", "zero_shot_cot", "self_consistency"):
        res = P.evaluate(model, tok, P.held_out(2, 2), strategy, n=2, max_new_tokens=6, progress=False)
        assert res.n == 2 and all(r.prompt and r.gold for r in res.records)
        assert all(r.tokens >= 1 for r in res.records)


def test_cli_rejects_bad_input_in_one_line(capsys):
    from labkit import cli

    assert cli.run(P.main, ["--steps", "7", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --steps must be 1-5, got 7"
    with pytest.raises(LabkitError, match="only 100 committed test problems have 3 steps"):
        P.held_out(3, 101)
