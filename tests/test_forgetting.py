"""labkit.forgetting: EWC's Fisher and penalty against hand computations, mix ratios exactly,
the batched fact probe against greedy generation, determinism, and the CLI's JSON shape."""
import copy
import json
import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from labkit import data, forgetting as F, models, train
from labkit.errors import LabkitError


# ---------------------------------------------------------------------------
# EWC against a hand computation
# ---------------------------------------------------------------------------
class Linear2(nn.Module):
    """loss = (w . x + b - y)^2 for one sample: gradients 2e*x and 2e, by hand."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.b = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, y):
        return SimpleNamespace(loss=(self.w @ x + self.b - y) ** 2)


BATCHES = [{"x": torch.tensor([1.0, 0.0]), "y": torch.tensor(1.0)},   # e = 0.5: g_w = [1, 0], g_b = 1
           {"x": torch.tensor([0.0, 1.0]), "y": torch.tensor(0.0)}]   # e = 2.5: g_w = [0, 5], g_b = 5


def test_fisher_diagonal_equals_mean_squared_gradient_by_hand():
    fisher = F.fisher_diagonal(Linear2(), BATCHES)
    assert torch.equal(fisher["w"], torch.tensor([(1 + 0) / 2, (0 + 25) / 2]))
    assert torch.equal(fisher["b"], torch.tensor((1 + 25) / 2))


def test_ewc_penalty_and_its_gradient_by_hand():
    model = Linear2()
    fisher = F.fisher_diagonal(model, BATCHES)          # F_w = [0.5, 12.5], F_b = 13
    ewc = F.EWC(model, fisher, lam=2.0)                  # anchor = [1, 2], 0.5
    assert ewc(model).item() == 0.0                      # at the anchor
    with torch.no_grad():
        model.w.copy_(torch.tensor([2.0, 2.0]))          # delta_w = [1, 0]
        model.b.fill_(0.0)                               # delta_b = -0.5
    penalty = ewc(model)
    assert penalty.item() == pytest.approx(2.0 / 2 * (0.5 * 1 + 12.5 * 0 + 13 * 0.25))  # 3.75
    penalty.backward()                                   # d/dθ = lam * F * (θ - θ*)
    assert torch.allclose(model.w.grad, torch.tensor([2.0 * 0.5 * 1, 0.0]))
    assert model.b.grad.item() == pytest.approx(2.0 * 13 * -0.5)


def test_ewc_holds_the_weights_that_matter(tiny_config):
    """Same data, same seed: a large lambda keeps the high-Fisher weights nearer their anchor."""
    base = models.build(tiny_config, device="cpu", seed=0)
    g = torch.Generator().manual_seed(0)
    general = [{"input_ids": x, "labels": x} for x in torch.randint(0, 128, (4, 1, 16), generator=g)]
    fisher = F.fisher_diagonal(base, general)
    moved = {}
    for lam in (0.0, 1e6):
        torch.manual_seed(0)
        model = copy.deepcopy(base)
        ewc = F.EWC(model, fisher, lam)
        stream = torch.randint(128, 256, (2000,), generator=torch.Generator().manual_seed(1))  # "the domain"
        train.train(model, train.random_batches(stream, 4, 16, seed=0),
                    train.TrainConfig(steps=5, lr=1e-2, progress=False), extra_loss=ewc)
        moved[lam] = ewc_penalty_unit(model, fisher, ewc.anchor)
    assert moved[1e6] < 0.5 * moved[0.0]


def ewc_penalty_unit(model, fisher, anchor):
    return F.ewc_penalty(model, fisher, anchor, lam=1.0).item()


def test_ewc_rejects_bad_lambda_and_foreign_fisher():
    with pytest.raises(LabkitError):
        F.EWC(Linear2(), {"w": torch.ones(2)}, lam=-1)
    with pytest.raises(LabkitError):
        F.ewc_penalty(Linear2(), {"nope": torch.ones(2)}, {"nope": torch.ones(2)}, 1.0)
    with pytest.raises(LabkitError):
        F.fisher_diagonal(Linear2(), [])


# ---------------------------------------------------------------------------
# mix: the ratio is exact
# ---------------------------------------------------------------------------
DOMAIN = [f"d{i}" for i in range(50)]
GENERAL = [f"g{i}" for i in range(100)]


@pytest.mark.parametrize("ratio,n_general", [(0, 0), ("1:10", 5), (0.1, 5), ((1, 5), 10), ("1:5", 10),
                                             (0.2, 10), (Fraction(1, 5), 10), (1, 50), ("1:1", 50), ("2:1", 100)])
def test_mix_ratio_is_exact(ratio, n_general):
    out = F.mix(DOMAIN, GENERAL, ratio)
    assert len(out) == len(DOMAIN) + n_general
    assert sorted(x for x in out if x.startswith("d")) == sorted(DOMAIN)    # every domain doc, once
    assert sorted(x for x in out if x.startswith("g")) == sorted(GENERAL[:n_general])  # the first k general


def test_mix_is_seeded_and_shuffled():
    a, b, c = F.mix(DOMAIN, GENERAL, "1:5", seed=0), F.mix(DOMAIN, GENERAL, "1:5", seed=0), F.mix(DOMAIN, GENERAL, "1:5", seed=1)
    assert a == b and a != c
    assert a[: len(DOMAIN)] != DOMAIN  # not just appended


@pytest.mark.parametrize("bad", [-0.1, "a:b", "1:0", float("nan"), True, None, (1, 2, 3)])
def test_mix_rejects_bad_ratios(bad):
    with pytest.raises(LabkitError):
        F.mix(DOMAIN, GENERAL, bad)


def test_mix_refuses_a_silently_smaller_ratio():
    with pytest.raises(LabkitError, match="needs 150 general"):
        F.mix(DOMAIN, GENERAL, 3)


def test_parse_ratio_forms():
    assert F.parse_ratio("1:5") == F.parse_ratio(0.2) == F.parse_ratio((1, 5)) == F.parse_ratio("0.2") == Fraction(1, 5)


def test_curriculum_general_share_decays_linearly():
    dom, gen = torch.full((500,), 5), torch.full((500,), 7)
    it = F.curriculum_batches(dom, gen, batch_size=8, seq_len=4, steps=5, start=0.5, end=0.0)
    counts = [int((next(it)["input_ids"][:, 0] == 7).sum()) for _ in range(6)]
    assert counts == [4, 3, 2, 1, 0, 0]   # round(share * 8) for shares .5, .375, .25, .125, 0; then stays 0


# ---------------------------------------------------------------------------
# Strategy names and reading results
# ---------------------------------------------------------------------------
def test_parse_strategy():
    assert F.parse_strategy("replay_1_5") == {"kind": "replay", "ratio": Fraction(1, 5)}
    assert F.parse_strategy("lr_3e-4") == {"kind": "lr", "lr": 3e-4}
    assert F.parse_strategy("lr_0.0002") == {"kind": "lr", "lr": 2e-4}
    assert F.parse_strategy("ewc_1e5") == {"kind": "ewc", "lam": 1e5}
    assert F.parse_strategy("lora") == {"kind": "lora"}
    for bad in ("replay_1_0", "lr_0", "fullft", "ewc_-1", ""):
        with pytest.raises(LabkitError):
            F.parse_strategy(bad)


def test_matched_domain_loss_interpolates_by_hand():
    curve = {"step": [0, 10, 20], "domain_loss": [8.0, 4.0, 2.0], "general_loss": [1.0, 1.4, 2.0],
             "fact_recall": [1.0, 0.8, 0.4]}
    m = F.at_matched_domain_loss(curve, 3.0)   # halfway between steps 10 and 20
    assert m == pytest.approx({"step": 15.0, "domain_loss": 3.0, "general_loss": 1.7, "fact_recall": 0.6})
    assert F.at_matched_domain_loss(curve, 1.0) is None


# ---------------------------------------------------------------------------
# Probes on the real lab model
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab():
    return F.setup(profile="smoke", device="cpu", steps=3, batch_size=2, seq_len=32, eval_windows=4,
                   n_facts=12, n_sft=4, fisher_windows=2, curve_every=2)


def test_fact_recall_equals_greedy_generation(lab):
    """The batched teacher-forced probe gives the same verdicts as decoding (lab 00's rule)."""
    probes = data.fact_probes()[::10] + data.domain_probes()[::10]
    damaged = copy.deepcopy(lab.base)
    with torch.no_grad():
        for p in damaged.model.layers[1].parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    for model in (lab.base, damaged):
        by_decoding = []
        for prompt, answer in probes:
            words = models.generate_text(model, lab.tokenizer, prompt, max_new_tokens=8).split()
            by_decoding.append(bool(words) and words[0] == answer + ".")
        assert F.fact_recall(model, lab.tokenizer, probes) == sum(by_decoding) / len(probes)
    assert F.fact_recall(lab.base, lab.tokenizer, data.fact_probes()[::10]) == 1.0  # pretrained: knows its facts


def test_evaluate_keys_and_base_values(lab):
    out = F.evaluate(lab.base, lab.tokenizer)   # the profile's default probe sets
    assert {"general_loss", "domain_loss", "fact_recall", "domain_acc"} <= set(out)
    assert out["general_loss"] < out["domain_loss"]   # pretrained on general text only
    assert out["fact_recall"] == 1.0 and out["domain_acc"] == 0.0


def test_same_seed_same_numbers(lab):
    a = F.run_strategy("replay_1_5", lab, seed=0)
    b = F.run_strategy("replay_1_5", lab, seed=0)
    c = F.run_strategy("replay_1_5", lab, seed=1)
    assert a["curve"] == b["curve"] and a["general_loss"] == b["general_loss"]
    assert c["domain_loss"] != a["domain_loss"]
    assert a["curve"]["step"] == [0, 2, 3]


def test_cli_json_shape(capsys):
    names = ["full_ft", "replay_1_5", "ewc", "lora"]
    assert F.main(["--profile", "smoke", "--json", "--steps", "1", "--strategies", *names]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"base", "strategies"} and list(out["strategies"]) == names
    for entry in [out["base"], *out["strategies"].values()]:
        for key in ("general_loss", "domain_loss", "fact_recall"):
            assert math.isfinite(entry[key])


def test_cli_rejects_unknown_strategy():
    with pytest.raises(LabkitError, match="unknown strategy"):
        F.main(["--profile", "smoke", "--strategies", "bogus"])


def test_lora_trains_only_the_rows_of_new_tokens(lab):
    """`lora` = adapters + the embedding/output rows of tokens general text never uses; every other row
    of those two weights stays bit-identical to the base."""
    new = lab.new_tokens()
    assert 0 < len(new) < lab.base.get_input_embeddings().weight.shape[0]
    out = F.run_strategy("lora", lab, steps=3, curve_every=0, keep_model=True)
    model = out["model"]
    old = torch.ones(lab.base.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    old[new] = False
    for get in ("get_input_embeddings", "get_output_embeddings"):
        before, after = getattr(lab.base, get)().weight, getattr(model, get)().weight
        assert torch.equal(before[old], after[old])
        assert not torch.equal(before[new], after[new])
    hidden = model.get_input_embeddings().weight.shape[1]
    adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert out["trainable"] == adapters + 2 * len(new) * hidden


# ---------------------------------------------------------------------------
# Lab 06 additions: the general-vocabulary loss, the per-token Fisher, L2, real-world facts
# ---------------------------------------------------------------------------
def test_general_vocab_loss_equals_cross_entropy_on_the_kept_columns():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 30, generator=g) * 2
    vocab = torch.tensor([1, 4, 5, 9, 20, 29])
    labels = vocab[torch.randint(0, 6, (2, 7), generator=g)]
    labels[1, 3] = -100
    renumber = torch.full((30,), -100)
    renumber[vocab] = torch.arange(6)
    lab_ = labels[:, 1:]
    want = nn.functional.cross_entropy(logits[:, :-1, vocab].reshape(-1, 6),
                                       torch.where(lab_ == -100, -100, renumber[lab_.clamp(min=0)]).reshape(-1))
    torch.testing.assert_close(F.general_vocab_loss(logits, labels, vocab), want)
    # over the whole vocabulary it is the ordinary shifted loss
    torch.testing.assert_close(F.general_vocab_loss(logits, labels, torch.arange(30)),
                               nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 30), lab_.reshape(-1)))
    with pytest.raises(LabkitError, match="outside the vocabulary"):
        F.general_vocab_loss(logits, torch.full((2, 7), 2), vocab)


def test_vocab_probe_by_hand_and_against_the_model_loss(lab):
    v = F.vocab_probe(lab.base, lab.probes.general, lab.probes.general_vocab)
    assert v["loss"] == pytest.approx(train.evaluate_loss(lab.base, lab.probes.general), rel=1e-5)
    assert v["loss_gv"] <= v["loss"] + 1e-6            # renormalising over a subset can only raise p(label)
    b = lab.probes.general[0]
    with torch.no_grad():
        p = lab.base(input_ids=b["input_ids"]).logits[:, :-1].softmax(-1)
    outside = torch.ones(p.shape[-1], dtype=torch.bool)
    outside[lab.probes.general_vocab] = False
    assert len(lab.probes.general) == 1               # the fixture's probe set: one batch, so batch 0 is all of it
    assert v["outside_mass"] == pytest.approx(p[..., outside].sum(-1).mean().item(), rel=1e-4)
    # removing exactly the outside mass: loss - loss_gv = -mean log(1 - outside mass) per token
    with torch.no_grad():
        gap = -torch.log1p(-p[..., outside].sum(-1)).mean().item()
    assert v["loss"] - v["loss_gv"] == pytest.approx(gap, rel=1e-3, abs=1e-6)
    assert {"general_loss_gv", "outside_mass"} <= set(lab.base_probes)


def test_per_token_fisher_equals_separate_token_gradients(tiny_config):
    model = models.build(tiny_config, device="cpu", seed=0)
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(0))
    got = F.fisher_diagonal(model, [{"input_ids": ids, "labels": ids}], per_token=True)
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for t in range(5):                                   # 5 predicted tokens, one fresh forward each
        model.zero_grad()
        logits = model(input_ids=ids).logits[0, t]
        nn.functional.cross_entropy(logits[None], ids[0, t + 1][None]).backward()
        for n, p in model.named_parameters():
            want[n] += p.grad ** 2 / 5
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-10)


def test_uniform_fisher_keeps_the_trace_and_l2_strategy_runs(lab):
    f = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([[0.0, 8.0]])}
    u = F.uniform_fisher(f)
    assert torch.equal(u["a"], torch.tensor([3.0, 3.0])) and torch.equal(u["b"], torch.tensor([[3.0, 3.0]]))
    assert F.parse_strategy("l2") == {"kind": "l2"} and F.parse_strategy("l2_1e5") == {"kind": "l2", "lam": 1e5}
    out = F.run_strategy("l2_1e6", lab, steps=2, curve_every=0)
    assert out["ewc_lambda"] == 1e6 and math.isfinite(out["general_loss"])


def test_fact_hits_are_the_per_item_verdicts_of_fact_recall(lab):
    probes = data.fact_probes()[::15]
    hits = F.fact_hits(lab.base, lab.tokenizer, probes)
    assert len(hits) == len(probes) and all(isinstance(h, bool) for h in hits)
    assert F.fact_recall(lab.base, lab.tokenizer, probes) == sum(hits) / len(hits)
    cands = [(p, a, "fictional") for p, a in probes] + [("The capital of Veloria is", "Paris", "wrong")]
    assert F.known_facts(lab.base, lab.tokenizer, cands, suffix=".", add_bos=True) == [p for p, h in zip(probes, hits) if h]


def test_world_fact_candidates_are_many_distinct_and_not_in_the_replay_text():
    cands = F.world_fact_candidates()
    assert len(cands) >= 150
    assert len({(p, a) for p, a, _ in cands}) == len(cands)
    assert all(a and " " not in a and p[0].isupper() for p, a, _ in cands)
    general = " ".join(data.load("general", "train"))
    assert sum(f"{p} {a}" in general for p, a, _ in cands) == 0


def test_chat_eval_batches_on_the_lab_tokenizer_are_lora_s(lab):
    from labkit import lora

    items = data.load("instructions", "test")[:3]
    a, b = F.chat_eval_batches(lab.tokenizer, items), lora.instruction_eval_batches(lab.tokenizer, items)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_english_nll_is_perplexity_s(lab):
    from labkit import perplexity

    texts = perplexity.real_english()[:2]
    assert F.english_nll(lab.base, lab.tokenizer, texts) == perplexity.perplexity(lab.base, lab.tokenizer, texts)["nll"]
