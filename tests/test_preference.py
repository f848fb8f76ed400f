"""labkit.preference against TRL 1.16 and transformers: real RewardTrainer / DPOTrainer / SFTTrainer
built offline on a tiny random Llama and the lab tokenizer, one collated batch, loss and gradients
side by side; the reward model against LlamaForSequenceClassification with the same weights; the
pairs checked against labkit.data."""
import math
import re
import tempfile

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from labkit import data, preference
from labkit.errors import LabkitError
from labkit.tokenizer import load_tokenizer

datasets = pytest.importorskip("datasets")
trl = pytest.importorskip("trl")
datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _config(tok, **kw):
    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       **kw)


def _lm(tok, seed):
    torch.manual_seed(seed)
    return LlamaForCausalLM(_config(tok))


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------- §1 the pairs
def test_pairs_are_reproducible_and_take_turns():
    pairs = preference.preference_pairs(30, seed=3)
    assert pairs == preference.preference_pairs(30, seed=3)
    assert pairs != preference.preference_pairs(30, seed=4)
    assert [p["kind"] for p in pairs] == list(preference.KINDS) * 10
    assert preference.preference_pairs(12, kinds=["off_by_one"]) == preference.preference_pairs(12, kinds="off_by_one")
    two = preference.preference_pairs(12, kinds=("no_stop", "wrong_fact"))
    assert [p["kind"] for p in two] == ["no_stop", "wrong_fact"] * 6
    assert preference.preference_pairs(0) == []
    assert len({(p["prompt"], p["rejected"]) for p in preference.preference_pairs(600)}) == 600   # no repeats


def test_pinned_first_pairs():
    """A change to the generator (or to labkit.data's tables) shows up here, not in a lab's numbers."""
    first = preference.preference_pairs(3)
    assert first[0] == {"prompt": "What is the job of Otto Fenwick?", "chosen": "Otto Fenwick works as a gardener.",
                        "rejected": "Otto Fenwick works as a nurse.", "kind": "wrong_fact"}
    assert first[1]["chosen"] == "8 plus 35 is 43." and first[1]["rejected"] == "8 plus 35 is 42."
    assert first[2]["rejected"].startswith(first[2]["chosen"] + " " + first[2]["chosen"])


@pytest.mark.parametrize("split", data.SPLITS)
def test_chosen_is_right_and_rejected_is_the_named_mistake(split):
    pairs = preference.preference_pairs(300, seed=1, split=split)
    true_facts = {data.fact_sentence(*f) for f in data.FACTS}
    sentence_of = {}   # (entity, relation) -> every sentence the relation could state about the entity
    for e, r, _ in data.FACTS:
        sentence_of[(e, r)] = {data.fact_sentence(e, r, a) for _, r2, a in data.FACTS if r2 == r}
    for p in pairs:
        assert data.split_of(p["prompt"]) == split
        if p["kind"] == "wrong_fact":
            assert p["chosen"] in true_facts and p["rejected"] not in true_facts
            assert any(p["chosen"] in s and p["rejected"] in s for s in sentence_of.values())
        elif p["kind"] == "off_by_one":
            x, y, right = map(int, re.fullmatch(r"(\d+) plus (\d+) is (\d+)\.", p["chosen"]).groups())
            wrong = int(re.fullmatch(rf"{x} plus {y} is (\d+)\.", p["rejected"]).group(1))
            assert right == x + y and abs(wrong - right) == 1 and wrong >= 0
        else:
            assert p["kind"] == "no_stop"
            assert p["rejected"].startswith(p["chosen"] + " " + p["chosen"]) and not p["rejected"].endswith(".")
            assert p["chosen"] in true_facts or re.fullmatch(r"\d+ plus \d+ is \d+\.", p["chosen"])


def test_prompts_and_answers_are_the_sft_instructions():
    """Same question wordings and the same right answers as data.instructions (what lab 09 trains)."""
    sft = {x["prompt"]: x["response"] for x in data.instructions(4000) if x["task"] in ("fact", "add")}
    shared = [p for p in preference.preference_pairs(600) if p["prompt"] in sft]
    assert len(shared) > 100
    assert all(sft[p["prompt"]] == p["chosen"] for p in shared)


def test_formats_are_trl_conversational_records():
    from trl.data_utils import is_conversational

    p = preference.preference_pairs(1)[0]
    f = preference.formats(p)
    assert set(f) == {"sft", "rm", "ppo"}
    assert set(f["sft"]) == {"prompt", "completion"} and set(f["rm"]) == {"prompt", "chosen", "rejected"}
    assert set(f["ppo"]) == {"prompt"}
    assert all(is_conversational(r) for r in f.values())
    assert f["rm"]["rejected"] == [{"role": "assistant", "content": p["rejected"]}]


def _trainer_rows(tok, pairs):
    """What SFTTrainer, RewardTrainer and DPOTrainer make of formats(pair): their tokenized rows."""
    recs = [preference.formats(p) for p in pairs]
    with tempfile.TemporaryDirectory() as out:
        common = dict(output_dir=out, report_to=[], use_cpu=True, bf16=False)
        sft = trl.SFTTrainer(model=_lm(tok, 0), args=trl.SFTConfig(max_length=None, **common), processing_class=tok,
                             train_dataset=datasets.Dataset.from_list([r["sft"] for r in recs])).train_dataset
        rm = trl.RewardTrainer(model=LlamaForSequenceClassification(_config(tok, num_labels=1)),
                               args=trl.RewardConfig(**common), processing_class=tok,
                               train_dataset=datasets.Dataset.from_list([r["rm"] for r in recs])).train_dataset
        dpo = trl.DPOTrainer(model=_lm(tok, 0), ref_model=_lm(tok, 0), args=trl.DPOConfig(**common),
                             processing_class=tok,
                             train_dataset=datasets.Dataset.from_list([r["rm"] for r in recs])).train_dataset
    return recs, sft, rm, dpo


def test_sft_rm_dpo_and_ppo_records_tokenize_to_the_same_sequences(tok):
    """SFT trains exactly DPO's chosen completion after DPO's prompt; the RM scores that same sequence;
    the PPO prompt renders to DPO's prompt tokens (the template's generation prompt included)."""
    from trl.data_utils import maybe_apply_chat_template

    pairs = preference.preference_pairs(6, seed=2)
    recs, sft, rm, dpo = _trainer_rows(tok, pairs)
    for rec, s, r, d in zip(recs, sft, rm, dpo):
        assert s["input_ids"] == d["prompt_ids"] + d["chosen_ids"] == r["chosen_ids"]
        assert r["rejected_ids"] == d["prompt_ids"] + d["rejected_ids"]
        assert s["labels"] == [-100] * len(d["prompt_ids"]) + d["chosen_ids"]
        prompt = maybe_apply_chat_template(rec["ppo"], tok)["prompt"]
        assert prompt.endswith("<|assistant|>\n")
        assert tok(prompt, add_special_tokens=False)["input_ids"] == d["prompt_ids"]
        assert tok.decode(d["chosen_ids"]) == rec["rm"]["chosen"][0]["content"] + "<|end|>\n"


# ----------------------------------------------------------------------------- §2 the reward model
def _padded(tok, texts, side):
    ids = [tok(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    pad = tok.pad_token_id
    rows = [([pad] * (width - len(i)) + i) if side == "left" else (i + [pad] * (width - len(i))) for i in ids]
    mask = [[int(t != pad) for t in row] for row in rows]
    return torch.tensor(rows), torch.tensor(mask)


@pytest.mark.parametrize("side", ["right", "left"])
def test_reward_model_equals_llama_for_sequence_classification(tok, side):
    torch.manual_seed(0)
    rm = preference.RewardModel(LlamaForCausalLM(_config(tok)))
    ref = LlamaForSequenceClassification(_config(tok, num_labels=1))
    ref.load_state_dict(rm.state_dict())           # strict: the same parameter names
    ids, mask = _padded(tok, ["a", "The capital of Veloria is Marden.", "2 plus 2 is 4. 2 plus 2"], side)
    mine = rm(ids, attention_mask=mask)
    assert mine.shape == (3,)
    assert torch.equal(mine, ref(input_ids=ids, attention_mask=mask).logits.squeeze(-1))


def test_reward_model_shares_the_decoder_and_needs_a_pad_id_only_for_batches(tok):
    lm = _lm(tok, 1)
    rm = preference.RewardModel(lm, pad_token_id=None)
    assert rm.model is lm.model and rm.pad_token_id == tok.pad_token_id
    rm.pad_token_id = None
    one = torch.tensor([[1, 50, 60, 70]])
    ref = LlamaForSequenceClassification(_config(tok, num_labels=1))
    ref.load_state_dict(rm.state_dict())
    ref.config.pad_token_id = None
    assert torch.equal(rm(one), ref(input_ids=one).logits.squeeze(-1))   # no pad id: the last token
    with pytest.raises(LabkitError, match="pad_token_id"):
        rm(torch.tensor([[1, 2], [3, 4]]))
    with pytest.raises(LabkitError, match="causal LM"):
        preference.RewardModel(torch.nn.Linear(2, 2))


def _reward_trainer(tok, pairs, margins=None, **cfg):
    model = LlamaForSequenceClassification(_config(tok, num_labels=1))
    rows = [preference.formats(p)["rm"] for p in pairs]
    if margins is not None:
        rows = [{**r, "margin": m} for r, m in zip(rows, margins)]
    out = tempfile.mkdtemp()
    args = trl.RewardConfig(output_dir=out, report_to=[], use_cpu=True, bf16=False, **cfg)
    trainer = trl.RewardTrainer(model=model, args=args, processing_class=tok,
                                train_dataset=datasets.Dataset.from_list(rows))
    return trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])


@pytest.mark.parametrize("margins,center", [(None, None), ([0.0, 0.5, 1.0, 2.0], None), (None, 0.01),
                                            ([0.3, 0.0, 1.5, 0.2], 0.1)])
def test_pairwise_loss_equals_reward_trainer_loss_and_gradients(tok, margins, center):
    torch.manual_seed(0)
    trainer, batch = _reward_trainer(tok, preference.preference_pairs(4, seed=5), margins,
                                     center_rewards_coefficient=center)
    loss_trl = trainer.compute_loss(trainer.model, dict(batch))
    loss_trl.backward()
    grads_trl = _grads(trainer.model)

    rm = preference.RewardModel(LlamaForCausalLM(_config(tok)))
    rm.load_state_dict(trainer.model.state_dict())
    rewards = rm(batch["input_ids"], attention_mask=batch["attention_mask"])
    chosen, rejected = rewards.chunk(2)
    loss = preference.pairwise_loss(chosen, rejected, batch.get("margin"), center_rewards_coefficient=center)
    loss.backward()
    # the same modules on the same batch, the same operations in the same order: bit for bit
    assert torch.equal(loss, loss_trl.detach())
    grads = _grads(rm)
    assert grads.keys() == grads_trl.keys()
    assert all(torch.equal(grads[k], grads_trl[k]) for k in grads)


def test_pairwise_loss_by_hand():
    c, r = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    expected = -(math.log(1 / (1 + math.exp(-2))) + math.log(0.5) + math.log(1 / (1 + math.exp(2)))) / 3
    assert preference.pairwise_loss(c, r).item() == pytest.approx(expected, rel=1e-6)
    assert preference.pairwise_loss(c, r, 2.0).item() == pytest.approx(preference.pairwise_loss(c - 2, r).item())
    assert preference.pairwise_loss(c, r).dim() == 0


# ----------------------------------------------------------------------------- §3 DPO
def test_sequence_logps_by_hand_and_against_the_model_loss(tok):
    model = _lm(tok, 2).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, len(tok), (3, 9), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, 7:] = -100                                          # padding at the end of row 1
    got = preference.sequence_logps(model, ids, labels)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), -1)
    by_hand = torch.tensor([sum(logp[b, t - 1, ids[b, t]].item() for t in range(9) if labels[b, t] != -100)
                            for b in range(3)])
    assert torch.allclose(got, by_hand, atol=1e-5)                # a Python sum vs torch's: rounding only
    for b in range(3):                                            # transformers' loss is the mean NLL
        n = int((labels[b, 1:] != -100).sum())
        hf = model(ids[b:b + 1], labels=labels[b:b + 1]).loss
        assert torch.allclose(-got[b] / n, hf, atol=1e-6)


def _dpo_trainer(tok, pairs, loss_type, beta):
    policy, ref = _lm(tok, 10), _lm(tok, 11)                      # policy != reference: a real log-ratio
    rows = [preference.formats(p)["rm"] for p in pairs]
    args = trl.DPOConfig(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True, bf16=False, beta=beta,
                         loss_type=[loss_type])
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok,
                             train_dataset=datasets.Dataset.from_list(rows))
    return trainer, policy, ref, trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])


@pytest.mark.parametrize("loss_type,beta", [("sigmoid", 0.1), ("sigmoid", 0.5), ("ipo", 0.1), ("ipo", 0.7),
                                            ("hinge", 0.1), ("hinge", 2.0)])
def test_dpo_loss_equals_dpo_trainer_loss_rewards_and_gradients(tok, loss_type, beta):
    pairs = preference.preference_pairs(6, seed=7)               # two of each kind: lengths differ
    trainer, policy, ref, batch = _dpo_trainer(tok, pairs, loss_type, beta)
    loss_trl = trainer.compute_loss(policy, dict(batch))
    loss_trl.backward()
    grads_trl = _grads(policy)
    policy.zero_grad()

    completion = batch["completion_mask"]
    labels = batch["input_ids"].masked_fill(completion == 0, -100)
    n_chosen, n_rejected = completion.sum(-1).chunk(2)
    kw = dict(chosen_tokens=n_chosen, rejected_tokens=n_rejected) if loss_type == "ipo" else {}

    # 1. dpo_loss on TRL's own sequence log-probs (its fused LM head) is TRL's loss, bit for bit,
    #    and so is its gradient: the formula is the same, operation for operation
    def trl_logps(model):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                    fused_lm_head=True, use_cache=False)
        return out.log_probs.sum(1).chunk(2)
    with torch.no_grad():
        ref_c, ref_r = trl_logps(ref)
    losses, chosen_rewards, rejected_rewards = preference.dpo_loss(*trl_logps(policy), ref_c, ref_r, beta=beta,
                                                                   loss_type=loss_type, **kw)
    assert torch.equal(losses.mean(), loss_trl.detach())
    losses.mean().backward()
    assert all(torch.equal(g, grads_trl[k]) for k, g in _grads(policy).items())
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"][-1] == chosen_rewards.mean().item()
    assert metrics["rewards/rejected"][-1] == rejected_rewards.mean().item()
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
    policy.zero_grad()

    # 2. from scratch: sequence_logps (full log-softmax) + dpo_loss. TRL's chunked online-logsumexp
    #    kernel (and its hand-written backward) rounds differently, so allclose
    pol_c, pol_r = preference.sequence_logps(policy, batch["input_ids"], labels, batch["attention_mask"]).chunk(2)
    with torch.no_grad():
        mine_ref_c, mine_ref_r = preference.sequence_logps(ref, batch["input_ids"], labels,
                                                           batch["attention_mask"]).chunk(2)
    # sums of ~30 log-probs of about -7.6 each: float32 rounding is ~1e-5 of them
    assert torch.allclose(mine_ref_c, ref_c, atol=1e-4) and torch.allclose(mine_ref_r, ref_r, atol=1e-4)
    losses2, c2, r2 = preference.dpo_loss(pol_c, pol_r, mine_ref_c, mine_ref_r, beta=beta, loss_type=loss_type, **kw)
    assert torch.allclose(losses2.mean(), loss_trl.detach(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(c2, chosen_rewards, atol=1e-4) and torch.allclose(r2, rejected_rewards, atol=1e-4)
    losses2.mean().backward()
    grads = _grads(policy)
    assert grads.keys() == grads_trl.keys()
    for k in grads:
        assert torch.allclose(grads[k], grads_trl[k], rtol=1e-4, atol=1e-6), k


def test_dpo_loss_by_hand():
    pc, pr = torch.tensor([-3.0, -10.0]), torch.tensor([-5.0, -9.0])
    rc, rr = torch.tensor([-4.0, -10.0]), torch.tensor([-4.0, -10.0])
    delta = torch.tensor([(-3 + 4) - (-5 + 4), (-10 + 10) - (-9 + 10)])        # [2, -1]
    losses, c, r = preference.dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert torch.allclose(losses, -F.logsigmoid(0.5 * delta))
    assert torch.equal(c, torch.tensor([0.5, 0.0])) and torch.equal(r, torch.tensor([-0.5, 0.5]))
    hinge, _, _ = preference.dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="hinge")
    assert torch.equal(hinge, torch.tensor([0.0, 1.5]))
    ipo, _, _ = preference.dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo")  # the paper: (Δ - 1/(2β))²
    assert torch.equal(ipo, torch.tensor([1.0, 4.0]))
    norm, _, _ = preference.dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo",   # TRL 1.x: per-token averages
                                     chosen_tokens=torch.tensor([2, 0]), rejected_tokens=[4, 1])
    assert torch.allclose(norm, torch.tensor([(1 / 2 + 1 / 4 - 1) ** 2, (0 / 1 - 1 / 1 - 1) ** 2]))
    same, _, _ = preference.dpo_loss(pc, pr, rc, rr, chosen_tokens=[2, 0], rejected_tokens=[4, 1])
    assert torch.equal(same, preference.dpo_loss(pc, pr, rc, rr)[0])           # counts matter for IPO only
    assert torch.equal(preference.implicit_rewards(pc, rc, beta=0.5), c)


def test_bad_inputs_are_one_line_errors(tok):
    x, model, ids = torch.zeros(3), _lm(tok, 0), torch.zeros(2, 3, dtype=torch.long)
    cases = [
        lambda: preference.preference_pairs(-1), lambda: preference.preference_pairs(2.5),
        lambda: preference.preference_pairs(3, split="val"), lambda: preference.preference_pairs(3, kinds=["typo"]),
        lambda: preference.preference_pairs(3, kinds=[]),
        lambda: preference.preference_pairs(2000, kinds="wrong_fact", split="test"),     # only 572 exist
        lambda: preference.formats({"prompt": "q", "chosen": "a"}), lambda: preference.formats("q"),
        lambda: preference.pairwise_loss(x, torch.zeros(4)), lambda: preference.pairwise_loss([1.0], [0.0]),
        lambda: preference.dpo_loss(x, x, x, x, loss_type="kto"), lambda: preference.dpo_loss(x, x, x, x, beta=0),
        lambda: preference.dpo_loss(x, x, x, torch.zeros(2)), lambda: preference.dpo_loss(x, x, x, x.long()),
        lambda: preference.dpo_loss(x, x, x, x, loss_type="ipo", chosen_tokens=[1, 2, 3]),
        lambda: preference.dpo_loss(x, x, x, x, loss_type="ipo", chosen_tokens=[1, 2], rejected_tokens=[1, 2]),
        lambda: preference.implicit_rewards(x, x, beta=-1.0),
        lambda: preference.sequence_logps(model, ids, torch.zeros(2, 4, dtype=torch.long)),
        lambda: preference.sequence_logps(model, ids.float(), ids.float()),
    ]
    for case in cases:
        with pytest.raises(LabkitError) as err:
            case()
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- the lab's shared helpers
def test_pair_batch_is_chosen_then_rejected_with_answer_labels(tok):
    pairs = preference.preference_pairs(3, seed=1)
    batch = preference.pair_batch(tok, pairs)
    assert batch["input_ids"].shape[0] == 6
    for i, p in enumerate(pairs):
        for row, side in ((i, "chosen"), (i + 3, "rejected")):
            trained = batch["labels"][row][batch["labels"][row] != -100].tolist()
            assert tok.decode(trained) == p[side] + "<|end|>"
    with pytest.raises(LabkitError):
        preference.pair_batch(tok, [])


def test_addition_reward_checks_the_sum_of_the_asked_numbers():
    assert preference.addition_reward("What is 17 plus 25?", "17 plus 25 is 42.") == 1.0
    assert preference.addition_reward("Add 3 and 4.", " 3 plus 4 is 7. ") == 1.0
    assert preference.addition_reward("Add 3 and 4.", "3 plus 4 is 8.") == 0.0
    assert preference.addition_reward("Add 3 and 4.", "4 plus 3 is 7.") == 0.0
    assert preference.addition_reward("Add 3 and 4.", "3 plus 4 is 7. 3 plus 4 is 7.") == 0.0
    with pytest.raises(LabkitError, match="two numbers"):
        preference.addition_reward("What is the capital of Veloria?", "x")


def test_unknown_pairs_ask_about_names_the_lab_data_never_uses():
    pairs = preference.unknown_pairs(40, seed=0)
    assert pairs == preference.unknown_pairs(40, seed=0)
    known = {e for e, _, _ in data.FACTS}
    for p in pairs:
        assert p["kind"] == "unknown" and p["chosen"] == preference.IDK
        assert data.split_of(p["prompt"]) == "train"
        assert not any(e in p["prompt"] for e in known)
    assert len({p["prompt"] for p in pairs}) == 40
    assert all(data.split_of(p["prompt"]) == "test" for p in preference.unknown_pairs(10, split="test"))


def test_group_advantages_equal_grpo_trainers():
    from trl.trainer.utils import nanstd

    g = torch.Generator().manual_seed(0)
    for rewards in (torch.randint(0, 2, (24,), generator=g).float(), torch.randn(24, generator=g)):
        mean = torch.nanmean(rewards.view(-1, 6), dim=1).repeat_interleave(6)
        std = nanstd(rewards.view(-1, 6), dim=1).repeat_interleave(6)
        assert torch.allclose(preference.group_advantages(rewards, 6), (rewards - mean) / (std + 1e-4), atol=1e-6)
    assert torch.equal(preference.group_advantages(torch.ones(4), 2), torch.zeros(4))   # no signal: 0
    for bad in (lambda: preference.group_advantages(torch.ones(5), 2),
                lambda: preference.group_advantages(torch.ones(4), 1),
                lambda: preference.group_advantages([1.0, 0.0], 2)):
        with pytest.raises(LabkitError):
            bad()
