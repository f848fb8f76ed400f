"""train.train_step: one optimizer step, and train.train built on it with the same numbers.

RECORDED holds what train.train returned *before* train_step was extracted from it (5 steps,
fixed seeds, on the lab's CPU build of torch), as float.hex strings. On this machine the loop gives
them bit for bit; another CPU may take other vector paths and round in the last bits, so the test
allows a relative 1e-5 (a changed loop moves them by far more). The in-process test below checks
bit-for-bit equality of train() and a hand loop of train_step() on whatever machine runs it.
"""
import math

import pytest
import torch

from labkit import models, train

RECORDED = {
    "fp32": {"loss": ["0x1.64ddc80000000p+2", "0x1.5692920000000p+2", "0x1.488fba0000000p+2", "0x1.44bb360000000p+2", "0x1.450f6c0000000p+2"],
             "skipped": 0, "tokens": 320, "params": "0x1.39449ce5dd3a8p+8"},
    "accum": {"loss": ["0x1.64c8c60000000p+2", "0x1.56bf2d0000000p+2", "0x1.4fa5ef0000000p+2", "0x1.45fab40000000p+2", "0x1.3f74430000000p+2"],
              "skipped": 0, "tokens": 640, "params": "0x1.365ec976a2508p+8"},
    "extra": {"loss": ["0x1.6775ca0000000p+2", "0x1.5929940000000p+2", "0x1.4b2f4e0000000p+2", "0x1.47a4d80000000p+2", "0x1.48052e0000000p+2"],
              "skipped": 0, "tokens": 320, "params": "0x1.3939e6e6d4d86p+8"},
    "bf16-mixed": {"loss": ["0x1.64c8950000000p+2", "0x1.4fff010000000p+2", "0x1.4c9d850000000p+2", "0x1.4503850000000p+2", "0x1.402be50000000p+2"],
                   "skipped": 0, "tokens": 640, "params": "0x1.378f7bc3f4db8p+8"},
    "fp16-mixed": {"loss": ["0x1.64c8f00000000p+2", "0x1.50000b0000000p+2", "0x1.4c9c550000000p+2", "0x1.45049a0000000p+2", "0x1.4300940000000p+2"],
                   "skipped": 1, "tokens": 640, "params": "0x1.37b42082d7aa8p+8"},
    "fp16-default": {"loss": ["0x1.64de2a0000000p+2", "0x1.5694080000000p+2", "0x1.4890760000000p+2", "0x1.44bdd40000000p+2", "0x1.4510ce0000000p+2"],
                     "skipped": 0, "tokens": 320, "params": "0x1.39458aadf2168p+8"},
}


def _stream(n=4000, vocab=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(n) % 17 + 3
    noise = torch.randint(3, vocab, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.05, noise, base)


def _options(name):
    opts, kw = dict(steps=5, lr=1e-3, progress=False), {}
    if name == "accum":
        opts.update(grad_accum=2, warmup_steps=2)
    if name == "extra":
        kw["extra_loss"] = lambda m: sum(p.float().pow(2).sum() for p in m.parameters()) * 1e-4
        opts.update(max_grad_norm=None)
    if name == "bf16-mixed":
        opts.update(precision="bf16-mixed", grad_accum=2)
    if name == "fp16-mixed":  # a scale high enough that one step overflows and is skipped
        opts.update(precision="fp16-mixed", grad_accum=2)
        kw["scaler"] = torch.amp.GradScaler("cpu", init_scale=2.0 ** 17, growth_interval=1)
    if name == "fp16-default":
        opts.update(precision="fp16-mixed")
    return train.TrainConfig(**opts), kw


@pytest.mark.parametrize("name", RECORDED)
def test_train_gives_the_recorded_numbers(tiny_config, name):
    torch.manual_seed(0)
    model = models.build(tiny_config, device="cpu", seed=0)
    cfg, kw = _options(name)
    h = train.train(model, train.random_batches(_stream(), 4, 16, seed=3), cfg, **kw)
    want = RECORDED[name]
    assert h.loss == pytest.approx([float.fromhex(x) for x in want["loss"]], rel=1e-5)
    assert (h.skipped_steps, h.tokens) == (want["skipped"], want["tokens"])
    params = float(sum(p.detach().double().sum() for p in model.parameters()))
    assert params == pytest.approx(float.fromhex(want["params"]), rel=1e-5)


def test_a_loop_of_train_steps_is_train(tiny_config):
    """train() is lr schedule + train_step + bookkeeping: the same steps by hand give the same losses."""
    cfg = train.TrainConfig(steps=4, lr=1e-3, grad_accum=2, progress=False)
    a = models.build(tiny_config, device="cpu", seed=0)
    h = train.train(a, train.random_batches(_stream(), 4, 16, seed=3), cfg)
    b = models.build(tiny_config, device="cpu", seed=0)
    opt = torch.optim.AdamW([p for p in b.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas,
                            weight_decay=cfg.weight_decay)
    batches, losses = train.random_batches(_stream(), 4, 16, seed=3), []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = train.lr_at(step, cfg.steps, cfg.lr)
        loss, skipped = train.train_step(b, [next(batches), next(batches)], opt)
        assert skipped is False
        losses.append(loss)
    assert losses == h.loss
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_train_step_one_batch_and_a_skipped_fp16_step(tiny_config):
    model = models.build(tiny_config, device="cpu", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = next(train.random_batches(_stream(), 2, 16))
    loss, skipped = train.train_step(model, batch, opt)
    assert math.isfinite(loss) and skipped is False
    assert all(p.grad is None for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 120)  # certain overflow in fp16
    loss, skipped = train.train_step(model, batch, opt, precision="fp16-mixed", scaler=scaler)
    assert skipped is True and scaler.get_scale() < 2.0 ** 120
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))  # the step was not taken


def test_extra_loss_is_added(tiny_config):
    model = models.build(tiny_config, device="cpu", seed=0)
    batch = next(train.random_batches(_stream(), 2, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    plain, _ = train.train_step(model, batch, opt)
    more, _ = train.train_step(model, batch, opt, extra_loss=lambda m: torch.tensor(10.0))
    assert more == pytest.approx(plain + 10.0)
