import math

import pytest
import torch

from labkit import models, train
from labkit.errors import LabkitError


def _stream(n=4000, vocab=256, seed=0):
    """A learnable token stream: a repeating pattern with a little noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(n) % 17 + 3
    noise = torch.randint(3, vocab, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.05, noise, base)


def test_lr_schedule_shapes():
    assert train.lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert train.lr_at(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert train.lr_at(99, 100, 1.0, warmup=0, schedule="cosine", min_ratio=0.1) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert train.lr_at(50, 100, 1.0, schedule="linear", min_ratio=0.0) == pytest.approx(0.5)
    assert train.lr_at(70, 100, 2.0, schedule="constant") == 2.0


def test_training_reduces_loss_and_evaluates(tiny_config):
    model = models.build(tiny_config, device="cpu", seed=0)
    tokens = _stream()
    batches = train.random_batches(tokens, 8, 32, seed=0)
    eval_data = train.eval_batches(tokens, 8, 32, max_batches=2)
    before = train.evaluate_loss(model, eval_data)
    cfg = train.TrainConfig(steps=40, lr=3e-3, eval_every=20, progress=False)
    h = train.train(model, batches, cfg, eval_data=eval_data)
    assert h.eval_step == [20, 40]
    assert h.eval_loss[-1] < 0.6 * before
    assert len(h.loss) == 40 and h.tokens == 40 * 8 * 32


def test_same_seed_same_history(tiny_config):
    losses = []
    for _ in range(2):
        model = models.build(tiny_config, device="cpu", seed=0)
        h = train.train(model, train.random_batches(_stream(), 4, 16, seed=3),
                        train.TrainConfig(steps=5, lr=1e-3, progress=False))
        losses.append(h.loss)
    assert losses[0] == losses[1]


def test_grad_accumulation_matches_big_batch(tiny_config):
    """accum=2 over two halves gives the same update as one batch of both halves."""
    tokens = _stream()
    batch = next(train.random_batches(tokens, 8, 16, seed=1))
    halves = iter([{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}])
    a = models.build(tiny_config, device="cpu", seed=0)
    b = models.build(tiny_config, device="cpu", seed=0)
    opts = dict(steps=1, lr=1e-2, progress=False, max_grad_norm=None)
    # SGD: the update is the gradient itself (Adam's first step is ~sign(g), which
    # would amplify float rounding of near-zero gradients)
    train.train(a, iter([batch]), train.TrainConfig(**opts), optimizer=torch.optim.SGD(a.parameters(), lr=1.0))
    train.train(b, halves, train.TrainConfig(grad_accum=2, **opts), optimizer=torch.optim.SGD(b.parameters(), lr=1.0))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)


def test_extra_loss_and_callback_are_used(tiny_config):
    model = models.build(tiny_config, device="cpu", seed=0)
    seen = []
    h = train.train(model, train.random_batches(_stream(), 2, 16), train.TrainConfig(steps=3, progress=False),
                    extra_loss=lambda m: torch.tensor(10.0), callback=lambda s, m, hist: seen.append(s))
    assert seen == [1, 2, 3]
    assert min(h.loss) > 10.0


def test_bf16_mixed_and_checkpointing_run(tiny_config):
    model = models.build(tiny_config, device="cpu", seed=0)
    h = train.train(model, train.random_batches(_stream(), 2, 16),
                    train.TrainConfig(steps=2, precision="bf16-mixed", gradient_checkpointing=True, progress=False))
    assert all(math.isfinite(x) for x in h.loss)


def test_bad_options_are_clear(tiny_config):
    model = models.build(tiny_config, device="cpu", seed=0)
    with pytest.raises(LabkitError, match="precision"):
        train.train(model, iter([]), train.TrainConfig(precision="fp8"))
    with pytest.raises(LabkitError, match="bf16"):
        train.train(model, iter([]), train.TrainConfig(precision="bf16"))
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(LabkitError, match="no trainable"):
        train.train(model, iter([]), train.TrainConfig())
