"""labkit.checkpointing: gradients equal torch.utils.checkpoint's and the plain model's; memory drops."""
import warnings

import pytest
import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from labkit import checkpointing as ck
from labkit import memory, models
from labkit.errors import LabkitError

warnings.filterwarnings("ignore", message=".*use_cache=True.*")


def _block(seed=0):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(16, 32, generator=g, requires_grad=True)
    w2 = torch.randn(32, 16, generator=g, requires_grad=True)
    return w1, w2


def _f(x, mask, scale, p, w1, w2, training=True):
    """Dropout, a tensor that needs no grad (mask), non-tensor args (scale, p, training), two outputs."""
    h = torch.nn.functional.dropout(torch.tanh(x @ w1), p=p, training=training)
    return (h @ w2) * scale + mask, h.square().mean()


def _grads(ckpt, x, mask, params, seed=123, p=0.3):
    for t in (x, *params):
        t.grad = None
    torch.manual_seed(seed)
    y, aux = ckpt(_f, x, mask, 2.0, p, *params)
    (y.sin().sum() + 3 * aux).backward()
    return y.detach(), [t.grad.clone() for t in (x, *params) if t.requires_grad]


def _torch(f, *args):
    return torch_checkpoint(f, *args, use_reentrant=False)


def _plain(f, *args):
    return f(*args)


def test_checkpoint_matches_torch_with_dropout_and_mixed_inputs():
    w1, w2 = _block()
    x = torch.randn(8, 16, requires_grad=True)
    mask = torch.randn(8, 16)                      # does not require grad
    y_ref, g_ref = _grads(_torch, x, mask, (w1, w2))
    y, g = _grads(ck.checkpoint, x, mask, (w1, w2))
    y_plain, _ = _grads(_plain, x, mask, (w1, w2))
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)          # same dropout mask
    torch.testing.assert_close(y, y_plain, rtol=0, atol=0)
    assert len(g) == len(g_ref) == 3
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert mask.grad is None


def test_dropout_mask_is_replayed_not_redrawn():
    """Without restoring the RNG the recomputed mask differs and so do the gradients."""
    w1, w2 = _block()
    x = torch.randn(8, 16, requires_grad=True)
    mask = torch.zeros(8, 16)
    _, g_ref = _grads(_torch, x, mask, (w1, w2), p=0.5)
    no_rng = lambda f, *a: ck.checkpoint(f, *a, preserve_rng_state=False)  # noqa: E731
    _, g_bad = _grads(no_rng, x, mask, (w1, w2), p=0.5)
    assert not torch.allclose(g_bad[0], g_ref[0], atol=1e-3)
    # and the caller's random stream continues as if nothing had been recomputed
    torch.manual_seed(5)
    y, aux = ck.checkpoint(_f, x, mask, 1.0, 0.5, w1, w2)
    (y.sum() + aux).backward()
    after = torch.rand(3)
    torch.manual_seed(5)
    _f(x, mask, 1.0, 0.5, w1, w2)
    torch.testing.assert_close(after, torch.rand(3), rtol=0, atol=0)


def test_parameters_get_gradients_when_no_input_requires_grad():
    w1, w2 = _block()
    x = torch.randn(8, 16)                         # frozen input (e.g. frozen embeddings)
    mask = torch.zeros(8, 16)
    _, g_ref = _grads(_torch, x, mask, (w1, w2))
    _, g = _grads(ck.checkpoint, x, mask, (w1, w2))
    assert len(g) == 2
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_checkpoint_keeps_only_its_inputs():
    w1, w2 = _block()
    x = torch.randn(64, 16, requires_grad=True)
    mask = torch.zeros(64, 16)
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t.detach()        # (returning t itself would leak saved outputs: a reference cycle)

    saved = {}
    for name, fn in (("plain", _plain), ("ckpt", ck.checkpoint)):
        seen.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(_f, x, mask, 1.0, 0.0, w1, w2, False)
        saved[name] = sum(seen.values())
    inputs = (x.numel() + w1.numel() + w2.numel()) * 4
    # plain: the two matmuls save x, w1, w2 and tanh's output h (64 x 32); tanh and square reuse h
    assert saved["plain"] == inputs + 64 * 32 * 4
    # checkpointed: exactly its tensor inputs (mask too: the recomputation needs it), nothing inside
    assert saved["ckpt"] == inputs + mask.numel() * 4


def test_kwargs_and_no_grad_and_autocast():
    w1, w2 = _block()
    x = torch.randn(4, 16, requires_grad=True)
    with torch.no_grad():
        y, _ = ck.checkpoint(_f, x, torch.zeros(4, 16), 1.0, 0.0, w1, w2, training=False)
    assert y.grad_fn is None
    grads = []
    for fn in (_torch, ck.checkpoint, None):
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fn is not None):
            y, aux = (fn or _torch)(_f, x, torch.zeros(4, 16), 1.0, 0.0, w1, w2)
        y.float().sum().backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)   # recomputed under bf16 too
    assert not torch.allclose(grads[1], grads[2], rtol=1e-4, atol=0)   # (fp32 gradients differ)


def _tiny_llama(layers=4):
    cfg = models.config("lab-tiny", vocab_size=256, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        attention_dropout=0.1)
    model = models.build(cfg, device="cpu", seed=0)
    model.train()
    return model


def _run(model, ids):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)                            # attention dropout is on
    out = model(ids, labels=ids)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("layout", [dict(every=1), dict(every=2), dict(segment=2), dict(segment=3)])
def test_model_outputs_and_gradients_equal_plain(layout):
    model = _tiny_llama()
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    logits, grads = _run(model, ids)
    groups = ck.apply_checkpointing(model, **layout)
    assert ck.checkpointed_layers(model) == sorted(i for g in groups for i in g)
    logits2, grads2 = _run(model, ids)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=0)
    for name in grads:
        torch.testing.assert_close(grads2[name], grads[name], rtol=1e-6, atol=1e-6, msg=name)
    ck.remove_checkpointing(model)
    assert ck.checkpointed_layers(model) == []
    assert all("forward" not in layer.__dict__ for layer in ck.decoder_layers(model))


def test_layouts():
    model = _tiny_llama(layers=9)
    assert ck.apply_checkpointing(model, every=4) == [[0], [4], [8]]
    assert ck.sqrt_segment(9) == 3 and ck.sqrt_segment(16) == 4 and ck.sqrt_segment(2) == 1
    assert ck.apply_checkpointing(model, segment=ck.sqrt_segment(9)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(LabkitError):
        ck.apply_checkpointing(model, every=0)
    ck.remove_checkpointing(model)
    model.gradient_checkpointing_enable()
    with pytest.raises(LabkitError):
        ck.apply_checkpointing(model)


def test_saved_activations_equal_transformers_and_the_estimator():
    model = _tiny_llama(layers=2)
    model.config.attention_dropout = 0.0
    ids = torch.randint(0, 256, (2, 32))
    plain = memory.saved_activation_bytes(model, ids, use_cache=False)
    ck.apply_checkpointing(model, every=1)
    ours = memory.saved_activation_bytes(model, ids, use_cache=False)
    ck.apply_checkpointing(model, every=2)
    ours_half = memory.saved_activation_bytes(model, ids, use_cache=False)
    ck.remove_checkpointing(model)
    assert memory.saved_activation_bytes(model, ids, use_cache=False) == plain
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hf = memory.saved_activation_bytes(model, ids, use_cache=False)
    model.gradient_checkpointing_disable()
    assert ours == hf
    assert ours < ours_half < plain
    est = memory.estimate(model.config, batch_size=2, seq_len=32, precision="fp32", device="cpu",
                          gradient_checkpointing=True)
    assert est.activations == ours


def test_generation_unchanged():
    model = _tiny_llama(layers=2).eval()
    ids = torch.randint(0, 256, (1, 5))
    ref = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    ck.apply_checkpointing(model, segment=2)
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_bench_quick_path_on_cpu(tmp_path):
    """The GPU benchmark's code path, shrunk: every layout runs, memory falls, the CSV reads back."""
    from labkit import results
    from labkit.bench import checkpointing as bench

    out = tmp_path / "ckpt.csv"
    assert bench.main(["--quick", "--device", "cpu", "--layers", "2", "--batch-size", "1", "--seq-len", "16",
                       "--repeats", "1", "--out", str(out)]) == 0
    meta, rows = results.read_csv(out)
    assert meta["device"] == "cpu"
    by = {r["layout"]: r for r in rows}
    assert list(by) == list(bench.LAYOUTS)
    assert by["every=1"]["saved_bytes"] == by["hf"]["saved_bytes"]
    for name in ("none", "every=1"):      # lab 01's estimator predicts the two ends
        assert by[name]["saved_bytes"] == pytest.approx(by[name]["est_activation_bytes"], rel=1e-3)
    assert by["every=1"]["held_bytes"] < by["every=2"]["held_bytes"] < by["none"]["held_bytes"]
    assert by["every=1"]["checkpointed_layers"] == 2 and by["every=2"]["checkpointed_layers"] == 1
    assert all(r["step_seconds"] > 0 for r in rows)


def test_bench_mean_interval_is_the_t_interval():
    """The spread of per-round checkpointing overheads: mean +- t(0.975, n-1) sd / sqrt(n)."""
    import statistics

    from labkit.bench.checkpointing import mean_interval

    vals = [0.10, 0.30, 0.20, 0.25]
    mean, low, high = mean_interval(vals)
    half = 3.182446305284263 * statistics.stdev(vals) / 2     # t(0.975, 3), by hand
    assert mean == pytest.approx(0.2125)
    assert low == pytest.approx(mean - half, rel=1e-4) and high == pytest.approx(mean + half, rel=1e-4)
    assert mean_interval([0.5]) == (0.5, None, None)
    assert mean_interval([]) == (None, None, None)


# --------------------------------------------------------------------------- no input needs grad
def test_no_input_requiring_grad_warns_like_torch_only_when_nothing_gets_a_gradient():
    x = torch.randn(3, 4)
    fixed = torch.randn(4, 4)                      # nothing inside needs a gradient either
    for impl in (torch_checkpoint, ck.checkpoint):
        with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True. Gradients will be None"):
            y = impl(lambda t: (t @ fixed).tanh(), x, use_reentrant=True)
        assert not y.requires_grad                 # (labkit used to claim it did)
        with pytest.raises(RuntimeError, match="does not require grad"):
            y.sum().backward()
    # with parameters inside, labkit gives them their gradients (torch's reentrant design gives None)
    w1, w2 = _block()
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # and no warning: gradients will not be None
        y, aux = ck.checkpoint(_f, x.repeat(1, 4), torch.zeros(3, 16), 1.0, 0.0, w1, w2)
    assert y.requires_grad


# --------------------------------------------------------------------------- use_reentrant=False
def _net(x, w, *, bias, extra=None):
    """A dict in (`extra`), a dict out, dropout, a keyword tensor that needs a gradient (`bias`)."""
    h = torch.nn.functional.dropout(torch.tanh(x @ w + bias), p=0.4, training=True)
    out = {"y": h.exp().sum(-1), "aux": h.square().mean(), "tag": "net"}
    if extra is not None:
        out["y"] = out["y"] * extra["scale"]
    return out


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 8, generator=g, requires_grad=True)
    w = torch.randn(8, 8, generator=g, requires_grad=True)
    bias = (torch.randn(8, generator=g, requires_grad=True) * 2)    # not a leaf: its gradient flows on
    scale = torch.randn(6, generator=g, requires_grad=True)
    return x, w, bias, scale


@pytest.mark.parametrize("impl", ["plain", "torch", "labkit"])
def test_non_reentrant_with_autograd_grad_dicts_and_keyword_tensors(impl):
    results = {}
    for name in ("plain", impl):
        x, w, bias, scale = _inputs()
        call = {"plain": lambda f, *a, **k: f(*a, **k),
                "torch": lambda f, *a, **k: torch_checkpoint(f, *a, use_reentrant=False, **k),
                "labkit": lambda f, *a, **k: ck.checkpoint(f, *a, use_reentrant=False, **k)}[name]
        torch.manual_seed(3)
        out = call(_net, x, w, bias=bias, extra={"scale": scale})
        loss = out["y"].sin().sum() + out["aux"]
        grads = torch.autograd.grad(loss, (x, w, bias, scale))     # not .backward(): reentrant fails here
        results[name] = (out["y"].detach(), out["tag"], grads)
    (y0, tag0, g0), (y1, tag1, g1) = results["plain"], results[impl]
    assert torch.equal(y1, y0) and tag1 == tag0 == "net"
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_non_reentrant_keeps_only_its_inputs_and_recomputes_once_per_backward():
    w1, w2 = _block()
    x = torch.randn(64, 16, requires_grad=True)
    mask = torch.zeros(64, 16)
    calls = []

    def f(*a):
        calls.append(1)
        return _f(*a)

    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, aux = ck.checkpoint(f, x, mask, 1.0, 0.0, w1, w2, False, use_reentrant=False)
    # like the reentrant design: exactly its tensor inputs, nothing inside (what lab 01's counter sees)
    assert sum(seen.values()) == (x.numel() + w1.numel() + w2.numel() + mask.numel()) * 4
    loss = y.sum() + aux
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()                                 # a second backward recomputes again
    torch.testing.assert_close(x.grad, 2 * first)
    assert len(calls) == 3                          # forward + one recomputation per backward


def test_non_reentrant_refuses_a_function_that_changes_between_calls():
    for recompute_saves_fewer in (True, False):
        count = [0]

        def changing(t):
            count[0] += 1
            fewer = (count[0] > 1) == recompute_saves_fewer
            return t.sin().exp() if fewer else t.sin().exp().sin()

        a = torch.randn(3, requires_grad=True)
        out = ck.checkpoint(changing, a, use_reentrant=False)
        if recompute_saves_fewer:
            with pytest.raises(RuntimeError, match="A different number of tensors was saved"):
                out.sum().backward()
        else:       # more: the recomputation stops once it has what the backward needs (torch's early stop)
            out.sum().backward()
            torch.testing.assert_close(a.grad, (a.sin().exp() * a.cos()).detach())
    shapes = [0]

    def reshaping(t):
        shapes[0] += 1
        return (t[: 3 - shapes[0] + 1]).exp().sum()

    with pytest.raises(ck.CheckpointError, match="different metadata"):
        ck.checkpoint(reshaping, torch.randn(3, requires_grad=True), use_reentrant=False).backward()


# --------------------------------------------------------------------------- use_reentrant=True refusals
def test_reentrant_refuses_what_it_cannot_do_like_torch():
    x = torch.randn(4, requires_grad=True)
    for impl in (torch_checkpoint, ck.checkpoint):
        y = impl(torch.sin, x, use_reentrant=True)
        with pytest.raises(RuntimeError, match="is incompatible with .grad"):
            torch.autograd.grad(y.sum(), x)
        # the input that needs a gradient does not reach the output
        with pytest.raises(RuntimeError, match="none of output has requires_grad=True"):
            impl(lambda p, q: p, torch.randn(4), x, use_reentrant=True).sum().backward()
    with pytest.raises(LabkitError, match="use_reentrant=False"):        # torch: ValueError, any keyword
        ck.checkpoint(lambda t, *, b: t + b, x, b=x * 2)
    with pytest.raises(LabkitError, match="use_reentrant=False"):        # torch: silently no gradient
        ck.checkpoint(lambda t: {"y": t.sin()}, x)
    # constants as keywords are fine, and non-tensor outputs pass through (torch's own test case)
    scale = 3
    t1, t2 = torch.rand(5, requires_grad=True), torch.rand(5, requires_grad=True)
    res = ck.checkpoint(lambda a, b, *, k: (k, a * b * k, None, "bar", a), t1, t2, k=scale)
    assert res[0] == 3 and res[2] is None and res[3] == "bar"
    (res[1].sum() + res[4].sum()).backward()
    torch.testing.assert_close(t1.grad, t2.detach() * 3 + 1)
