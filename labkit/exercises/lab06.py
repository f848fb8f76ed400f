"""Lab 06: catastrophic forgetting -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a hand formula, the
committed corpora), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference: torch itself where it has the piece (per-sample
gradients from `torch.func` for the Fisher, `cross_entropy` on the kept columns for the
general-vocabulary loss) and labkit's copy, proven equal in lab 06, where it does not.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise, draw_int


def _mix_general_docs(g: int, d: int) -> float:
    from .. import data

    return float(round(len(data.load("domain", "train")) * g / d))  # general documents per domain document


def _mix_token_share(g: int, d: int) -> float:
    from .. import data
    from ..tokenizer import load_tokenizer

    tok = load_tokenizer()
    domain = data.load("domain", "train")
    general = data.load("general", "train")[: round(len(domain) * g / d)]
    count = lambda docs: sum(len(ids) + 2 for ids in tok(docs, add_special_tokens=False)["input_ids"])  # + bos, eos
    return count(general) / (count(general) + count(domain))


def _ewc_penalty_by_hand() -> float:
    from fractions import Fraction

    f, delta, lam = (Fraction(1, 2), Fraction(2), Fraction(0)), (Fraction(1, 5), Fraction(-1, 10), Fraction(3)), 100
    return float(Fraction(lam, 2) * sum(fi * di**2 for fi, di in zip(f, delta)))   # exact: no float rounding


def _fisher_by_hand() -> float:
    import torch

    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    grads = [torch.autograd.grad((w * x - y) ** 2, w)[0] for x, y in ((1.0, 0.0), (2.0, 1.0))]
    return float(sum(g**2 for g in grads) / len(grads))


# ----------------------------------------------------------------------------- code


def _mix_inputs(gen):
    from fractions import Fraction

    n_domain = draw_int(gen, 1, 30)
    g, d = draw_int(gen, 0, 4), draw_int(gen, 1, 6)
    need = round(Fraction(g, d) * n_domain)
    domain = [f"domain document {i}" for i in range(n_domain)]
    general = [f"general story {i}" for i in range(need + draw_int(gen, 0, 5))]
    return domain, general, Fraction(g, d), draw_int(gen, 0, 10_000)


def _mix_reference(domain, general, ratio, seed):
    from .. import forgetting

    return forgetting.mix(domain, general, ratio, seed)


def _loss_net(d_in: int, hidden: int, classes: int, seed: int):
    import torch

    class _Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.body = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, classes))

        def forward(self, x, y):
            return _Out(torch.nn.functional.cross_entropy(self.body(x), y))

    return _Net()


class _Out:
    def __init__(self, loss):
        self.loss = loss


def _fisher_inputs(gen):
    import torch

    d_in, hidden, classes, n = draw_int(gen, 2, 7), draw_int(gen, 2, 9), draw_int(gen, 2, 5), draw_int(gen, 1, 12)
    model = _loss_net(d_in, hidden, classes, draw_int(gen, 0, 10_000))
    x, y = torch.randn(n, d_in, generator=gen), torch.randint(0, classes, (n,), generator=gen)
    return model, [{"x": x[i:i + 1], "y": y[i:i + 1]} for i in range(n)]


def _fisher_reference(model, batches):
    """torch.func: per-sample gradients by vmap(grad), squared, averaged."""
    import torch

    params = {n: p.detach() for n, p in model.named_parameters()}
    x = torch.cat([b["x"] for b in batches])
    y = torch.cat([b["y"] for b in batches])

    def loss_one(p, xi, yi):
        return torch.func.functional_call(model, p, (xi[None], yi[None])).loss

    per_sample = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return {n: (g.float() ** 2).mean(0) for n, g in per_sample.items()}


def _ewc_inputs(gen):
    import torch

    d_in, hidden, d_out = draw_int(gen, 1, 6), draw_int(gen, 1, 8), draw_int(gen, 1, 4)
    torch.manual_seed(draw_int(gen, 0, 10_000))
    model = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d_out))
    names = [n for n, _ in model.named_parameters()]
    keep = [n for n in names if draw_int(gen, 0, 3)] or names[:1]      # the Fisher may cover only some parameters
    params = dict(model.named_parameters())
    fisher = {n: torch.rand(params[n].shape, generator=gen) ** 3 for n in keep}
    anchor = {n: params[n].detach() + 0.3 * torch.randn(params[n].shape, generator=gen) for n in keep}
    lam = 10 ** float(torch.empty(1).uniform_(-1, 4, generator=gen))
    return model, fisher, anchor, lam


def _ewc_reference(model, fisher, anchor, lam):
    from .. import forgetting

    return forgetting.ewc_penalty(model, fisher, anchor, lam).detach()


def _ewc_run(fn, args):
    out = fn(*args)
    return out.detach() if hasattr(out, "detach") else out


def _gv_inputs(gen):
    import torch

    b, t, v = draw_int(gen, 1, 4), draw_int(gen, 2, 12), draw_int(gen, 3, 60)
    k = draw_int(gen, 1, v)
    vocab = torch.randperm(v, generator=gen)[:k].sort().values
    logits = torch.randn(b, t, v, generator=gen) * float(torch.empty(1).uniform_(0.5, 6, generator=gen))
    labels = vocab[torch.randint(0, k, (b, t), generator=gen)]
    drop = torch.rand(b, t, generator=gen) < 0.2
    drop[0, 1] = False                      # at least one labelled position
    labels = labels.masked_fill(drop, -100)
    return logits, labels, vocab


def _gv_reference(logits, labels, vocab):
    """torch's cross_entropy over the kept columns, labels renumbered into them."""
    import torch

    renumber = torch.full((logits.shape[-1],), -100, dtype=torch.long)
    renumber[vocab] = torch.arange(len(vocab))
    lab = labels[:, 1:]
    target = torch.where(lab == -100, -100, renumber[lab.clamp(min=0)])
    return torch.nn.functional.cross_entropy(logits[:, :-1][..., vocab].reshape(-1, len(vocab)).float(),
                                             target.reshape(-1))


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "06.replay_mix": CodeExercise(
        question="write replay_mix(domain, general, ratio, seed): every domain document plus round(ratio x "
                 "len(domain)) general ones, shuffled with random.Random(seed)",
        reference=_mix_reference, inputs=_mix_inputs, solution="replay_mix",
        hint="take the FIRST k general documents, put them after the domain ones, then random.Random(seed).shuffle "
             "the whole list; round a Fraction ratio exactly (round(Fraction(g, d) * n))"),
    "06.fisher_diagonal": CodeExercise(
        question="write fisher_diag(model, batches): the diagonal empirical Fisher, mean over batches of the squared "
                 "gradient of model(**batch).loss, one fp32 tensor per parameter name",
        reference=_fisher_reference, inputs=_fisher_inputs, solution="fisher_diag", rtol=1e-4, atol=1e-7,
        hint="zero the gradients before every batch, backward that batch's loss alone, add grad ** 2; divide by the "
             "number of batches at the end (not the squared mean gradient)"),
    "06.ewc_penalty": CodeExercise(
        question="write ewc_penalty(model, fisher, anchor, lam): lam / 2 x sum_i F_i (theta_i - theta*_i)^2 over "
                 "the parameters named in fisher, as a 0-d tensor",
        reference=_ewc_reference, inputs=_ewc_inputs, solution="ewc_penalty", run=_ewc_run, rtol=1e-5, atol=1e-6,
        hint="loop over fisher's names only (it may cover some parameters), square the distance to the anchor, weight "
             "by F, sum, and multiply by lam / 2 once"),
    "06.general_vocab_loss": CodeExercise(
        question="write general_vocab_loss(logits, labels, vocab): the next-token loss (labels shifted by one, -100 "
                 "ignored) with the softmax restricted to the token ids in vocab",
        reference=_gv_reference, inputs=_gv_inputs, solution="general_vocab_loss", rtol=1e-5, atol=1e-6,
        hint="drop the last logit position and the first label; set the logits of tokens outside vocab to -inf "
             "before log_softmax; average over the labelled positions only"),

    "06.mix_general_docs_1_4": Exercise(
        "general documents that mix() adds to the committed domain training corpus at general:domain 1:4",
        lambda: _mix_general_docs(1, 4), 0.0, "round(ratio x number of domain documents); ratio = 1/4"),
    "06.ewc_penalty_by_hand": Exercise(
        "EWC penalty for F = (0.5, 2, 0), theta - theta* = (0.2, -0.1, 3), lambda = 100",
        _ewc_penalty_by_hand, 0.0, "lambda/2 x sum F_i (theta_i - theta*_i)^2; a weight with F = 0 costs nothing"),
    "06.fisher_by_hand": Exercise(
        "diagonal Fisher of w for (w x - y)^2 at w = 1 over the samples (1, 0) and (2, 1)",
        _fisher_by_hand, 0.0, "per-sample gradient 2 (w x - y) x; square each, then average"),
    "06.mix_token_share_1_3": Exercise(
        "fraction of tokens that are general in the 1:3 general:domain mix of the committed corpora",
        lambda: _mix_token_share(1, 3), 0.0,
        "tokenize both parts (each document adds <bos> and <eos>); general stories are longer than log entries"),
}
