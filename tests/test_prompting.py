"""labkit.prompting: answer extraction, prompt text, Wilson intervals, voting, the harness, errors."""
import json
import math

import pytest
import numpy as np
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
    # Kojima et al.: stage 2 reads the WHOLE stage-1 output, the model's own answer sentence included
    assert prompts_seen[1] == [P.zero_shot_cot_stage2(
        APPLES["question"], "They used 20, so 23 - 20 = 3. They bought 6 more, so 3 + 6 = 9. The answer is 9.")]
    assert prompts_seen[1][0].endswith("3 + 6 = 9. The answer is 9. Therefore, the answer (arabic numerals) is")
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


# --------------------------------------------------------------------------- least-to-most, one call per sub-question
def test_least_to_most_solves_one_subquestion_per_call_with_earlier_answers():
    calls = []
    decomposition = " 1. How many apples after they used 20? 2. How many apples after they bought 6 more?"

    def stub(prompts, max_new, temperature=0.0, seed=0, stop=None):
        calls.append(list(prompts))
        k = len(calls)
        if k == 1:
            return [(decomposition, 20)]
        if k == 2:   # the model runs on past its sub-answer: the harness cuts at " 2. They"
            return [(" They used 20, so 23 - 20 = 3. 2. They bought", 12)]
        if k == 3:
            return [(" They bought 6 more, so 3 + 6 = 9. The answer is 9.", 14)]
        return [(" 9.", 2)]

    rec = P.evaluate(None, None, [APPLES], "least_to_most", generate=stub, progress=False).records[0]
    q, d = APPLES["question"], decomposition.strip()
    assert len(calls) == 4                                   # decompose, 2 sub-questions, final answer
    assert calls[1] == [P.least_to_most_step(q, d, [])]
    assert calls[2] == [P.least_to_most_step(q, d, ["They used 20, so 23 - 20 = 3."])]
    assert calls[2][0].endswith("Now solve them in order. 1. They used 20, so 23 - 20 = 3. 2.")
    assert calls[3][0].endswith("2. They bought 6 more, so 3 + 6 = 9. The answer is")
    assert rec.extracted == "9" and rec.correct and rec.tokens == 20 + 12 + 14 + 2


def test_least_to_most_prompt_builders_exact_text():
    q = APPLES["question"]
    d = P.decomposition_text(APPLES)
    head = f"Q: {q}\nA: Let's break down this problem. {d}\nNow solve them in order."
    assert P.least_to_most_step(q, d, []) == head + " 1."
    assert P.least_to_most_step(q, d, [" a. ", "b."]) == head + " 1. a. 2. b. 3."
    assert P.least_to_most_final(q, d, ["a.", "b."]) == head + " 1. a. 2. b. The answer is"
    assert P.parse_subquestions(d) == P.subquestions(APPLES)
    assert P.parse_subquestions("no questions here") == []
    assert P.cut_subanswer(" She gave away 8, so 12 - 8 = 4. The answer is 4.", 3) == "She gave away 8, so 12 - 8 = 4."
    assert P.cut_subanswer(" so 4 - 2 = 2. 2. She has", 1) == "so 4 - 2 = 2."   # " 2." after "=" is a result, not a number


def test_prompt_tokens_are_counted_per_call(cot_model):
    model, tok = cot_model
    res = P.evaluate(model, tok, [APPLES], "direct", progress=False)
    want = len(tok(tok.bos_token + P.direct(APPLES["question"]), add_special_tokens=False)["input_ids"])
    assert res.records[0].prompt_tokens == want == P.prompt_lengths(tok, [P.direct(APPLES["question"])])[0]
    zs = P.evaluate(model, tok, [APPLES], "zero_shot_cot", progress=False).records[0]
    stage1 = zs.completion.split(" || ")[0]
    both = P.prompt_lengths(tok, [P.zero_shot_cot(APPLES["question"]), P.zero_shot_cot_stage2(APPLES["question"], stage1)])
    assert zs.prompt_tokens == sum(both)
    assert res.row()["prompt_tokens_per_problem"] == want


def test_records_round_trip_through_csv(tmp_path):
    def stub(prompts, max_new, temperature=0.0, seed=0, stop=None):
        return [(' 9.\n"quoted", text', 3) for _ in prompts]

    res = {"direct": P.evaluate(None, None, [APPLES, {**APPLES, "answer": 8}], "direct", generate=stub, progress=False)}
    back = P.read_records(P.write_records(res, tmp_path / "r.csv"))
    assert [r.correct for r in back["direct"].records] == [True, False]
    assert [r.completion for r in back["direct"].records] == [r.completion for r in res["direct"].records]
    assert back["direct"].records[1].gold == "8" and back["direct"].records[0].extracted == "9"
    with pytest.raises(LabkitError, match="does not exist"):
        P.read_records(tmp_path / "missing.csv")


def test_eval_result_correct_feeds_the_paired_tests():
    from labkit import stats

    def stub(prompts, max_new, temperature=0.0, seed=0, stop=None):
        return [(" 9.", 1) for _ in prompts]

    probs = [APPLES, {**APPLES, "answer": 8}, APPLES]
    a = P.evaluate(None, None, probs, "direct", generate=stub, progress=False)
    assert a.correct == [True, False, True]
    assert stats.mcnemar(a.correct, a.correct).p == 1.0


# --------------------------------------------------------------------------- control pair (labkit.cot_model)
def test_filler_document_has_the_chain_token_count_and_no_reasoning():
    import random

    from labkit import cot_model, models

    _, tok = models.load("lab-tiny")
    rng = random.Random(0)
    stream = iter(data.word_problems(5, seed=3, split="train", n_steps=3))
    p = data.word_problems(5, seed=3, split="train", n_steps=3)[0]
    pieces = cot_model.document(rng, stream, "zero_shot_filler", tok)
    prompt, answer = pieces
    assert prompt == (P.zero_shot_cot(p["question"]), False) and answer[1] is True
    dots = answer[0].split(" The answer is")[0].split(f" {P.ANSWER_TRIGGER}")[0]
    assert set(dots.strip()) == {"."}
    n = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert n(dots) == n(" " + P.reasoning_of(p))
    assert answer[0].endswith(f" {p['answer']}.")
    with pytest.raises(LabkitError, match="need the tokenizer"):
        cot_model.document(rng, stream, "zero_shot_filler")


def test_control_mixtures_differ_only_in_the_chain_kind():
    from labkit import cot_model

    eq, fi = cot_model.MIXTURES["equal"], cot_model.MIXTURES["filler"]
    assert abs(sum(eq.values()) - 1) < 1e-12 and abs(sum(fi.values()) - 1) < 1e-12
    assert eq["direct"] == eq["zero_shot_cot"] == fi["direct"] == fi["zero_shot_filler"]
    assert eq["drill"] == fi["drill"] == cot_model.MIXTURE["drill"]
    assert cot_model.control_name("filler", 2) == "lab-cot-filler-seed2"
    with pytest.raises(LabkitError, match="unknown control mixture"):
        cot_model.control_name("heavy", 0)
    with pytest.raises(LabkitError, match="unknown document kind"):
        cot_model.document(None, iter([APPLES]), "nonsense")


def test_training_refuses_to_overwrite_a_committed_model():
    from labkit import cot_model, models

    with pytest.raises(LabkitError, match="holds a committed model; pass --force"):
        cot_model.train_cot_model(steps=1, out=models.checkpoint_dir("lab-cot"))
    with pytest.raises(LabkitError, match="unknown mixture"):
        cot_model.train_cot_model(steps=1, out="/tmp/nowhere-labkit", mixture="heavy")


@pytest.mark.parametrize("mixture", ["equal", "filler"])
def test_committed_control_models_record_their_command(mixture):
    from labkit import cot_model, models

    for seed in (0,):   # the committed training run per mixture of lab 08 §7
        meta = json.loads((models.checkpoint_dir(cot_model.control_name(mixture, seed)) / "training.json").read_text())
        assert meta["command"].startswith("python -m labkit.cot_model --mixture " + mixture)
        assert f"--seed {seed}" in meta["command"] and meta["mixture"] == cot_model.MIXTURES[mixture]
        assert meta["steps"] == 400 and meta["seed"] == seed


# --------------------------------------------------------------------------- exemplar choice (COT-07)
def test_few_shot_prompt_takes_your_exemplars_in_your_order():
    q = APPLES["question"]
    fixed = P.exemplars(2)
    assert P.few_shot_cot(q, 2, shots=fixed) == P.few_shot_cot(q, 2)
    swapped = P.few_shot_cot(q, shots=fixed[::-1])
    assert swapped != P.few_shot_cot(q, 2)
    assert swapped.startswith(f"Q: {fixed[1]['question']}\nA: {fixed[1]['solution']}\n\nQ: {fixed[0]['question']}")


def test_exemplar_sets_are_fresh_train_problems_and_reproducible():
    from labkit import data

    sets = P.exemplar_sets(5, 3, seed=4)
    assert sets == P.exemplar_sets(5, 3, seed=4) and sets != P.exemplar_sets(5, 3, seed=5)
    questions = [e["question"] for s in sets for e in s]
    assert len(questions) == 15 == len(set(questions))
    assert not set(questions) & {e["question"] for e in P.exemplars(8)}
    assert all(data.split_of(x) == "train" and 1 <= e["n_steps"] <= 4 for s in sets for e in s for x in [e["question"]])
    with pytest.raises(LabkitError, match="n_sets >= 1"):
        P.exemplar_sets(0)


def test_evaluate_sends_the_given_shots_and_refuses_them_elsewhere():
    seen = []

    def stub(prompts, max_new, temperature=0.0, seed=0, stop=None):
        seen.extend(prompts)
        return [(" so 9. The answer is 9.", 5)] * len(prompts)

    shots = P.exemplar_sets(1, 2, seed=1)[0]
    res = P.evaluate(None, None, [APPLES], "few_shot_cot", shots=shots, generate=stub, progress=False)
    assert seen == [P.few_shot_cot(APPLES["question"], shots=shots)] and res.records[0].correct
    assert res.params == {"k": 2}
    with pytest.raises(LabkitError, match="shots= is for strategy='few_shot_cot'"):
        P.evaluate(None, None, [APPLES], "direct", shots=shots, generate=stub, progress=False)


@pytest.mark.parametrize("x, df", [(0.5, 1), (3.0, 2), (10.0, 6), (30.0, 6), (2.5, 6), (100.0, 12), (0.01, 3)])
def test_chi2_sf_matches_torch_incomplete_gamma(x, df):
    ref = torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(x / 2, dtype=torch.float64))
    assert P.chi2_sf(x, df) == pytest.approx(float(ref), rel=1e-9, abs=1e-15)
    assert P.chi2_sf(0.0, df) == 1.0


def test_cochran_q_is_mcnemar_for_two_prompts_and_hand_checked_for_three():
    from labkit import stats
    import random

    g = random.Random(0)
    for _ in range(50):
        n = g.randint(5, 80)
        a, b = [g.random() < 0.6 for _ in range(n)], [g.random() < 0.4 for _ in range(n)]
        mc = stats.mcnemar(a, b)
        r = P.cochran_q([a, b])
        if mc.b + mc.c:
            assert r.q == pytest.approx((mc.b - mc.c) ** 2 / (mc.b + mc.c)) and r.df == 1
            assert r.informative == mc.b + mc.c
    # 3 prompts x 4 problems: C = (3, 1, 0), R = (2, 1, 1, 0), N = 4 -> Q = 2 (3*10 - 16) / (12 - 6) = 14/3
    r = P.cochran_q([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert r.q == pytest.approx(14 / 3) and r.df == 2 and r.p == pytest.approx(math.exp(-7 / 3))
    same = [[1, 0, 1, 1]] * 3
    assert P.cochran_q(same).q == 0.0 and P.cochran_q(same).p == 1.0
    with pytest.raises(LabkitError, match="at least 2 prompts"):
        P.cochran_q([[1, 0]])


def test_prompt_spread_null_and_a_real_difference():
    import random

    g = random.Random(1)
    same = [[g.random() < 0.5 for _ in range(60)]] * 5
    r = P.prompt_spread(same, n_perm=500)
    assert r.spread == 0 and r.sd == 0 and r.p_spread == 1.0 and r.null_sd == 0
    base = [g.random() < 0.5 for _ in range(200)]
    apart = [[True] * 200, [False] * 200, base]
    r = P.prompt_spread(apart, n_perm=500)
    assert r.spread == 1.0 and r.p_spread == pytest.approx(1 / 501)
    assert r.binomial_sd == pytest.approx(math.sqrt(np.mean(r.accuracies) * (1 - np.mean(r.accuracies)) / 200))
