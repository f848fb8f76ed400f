"""labkit.precision against torch: finfo, casts and bit patterns, and torch.amp.GradScaler."""
import math

import pytest
import torch

from labkit import models, precision, train
from labkit.errors import LabkitError
from labkit.precision import FORMATS, DynamicLossScaler, FloatFormat

REAL = [f for f in FORMATS.values() if f.dtype is not None]


def _codes_as(fmt: FloatFormat, codes: torch.Tensor) -> torch.Tensor:
    """Reinterpret integer bit patterns as values of fmt's torch dtype (float64)."""
    int_type = {8: torch.uint8, 16: torch.int16, 32: torch.int32}[fmt.bits]
    return codes.to(int_type).view(fmt.dtype).double()


# --------------------------------------------------------------------------- formats
@pytest.mark.parametrize("fmt", REAL, ids=lambda f: f.name)
def test_range_and_epsilon_match_finfo(fmt):
    fi = torch.finfo(fmt.dtype)
    assert (fmt.bits, fmt.max, fmt.smallest_normal, fmt.eps) == (fi.bits, fi.max, fi.smallest_normal, fi.eps)
    # the smallest subnormal is bit pattern 1, and nothing positive is smaller
    assert _codes_as(fmt, torch.tensor([1])).item() == fmt.smallest_subnormal
    assert torch.tensor([fmt.smallest_subnormal / 2], dtype=torch.float64).float().to(fmt.dtype).item() == 0.0


def test_hand_computed_values():
    e4m3 = FORMATS["fp8_e4m3fn"]
    assert e4m3.max == 448.0 and e4m3.max_exponent == 8          # the top exponent holds numbers
    assert FloatFormat("e4m3-ieee", 4, 3).max == 240.0           # ...which IEEE style would reserve
    assert FORMATS["fp8_e5m2"].max == 57344.0
    assert FORMATS["fp16"].smallest_subnormal == 2.0**-24
    tf32 = FORMATS["tf32"]
    assert (tf32.bits, tf32.eps, tf32.smallest_normal) == (19, 2.0**-10, 2.0**-126)
    assert tf32.max == 2.0**127 * (2 - 2.0**-10)


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8_e5m2", "fp8_e4m3fn"])
def test_decode_every_bit_pattern_like_torch(name):
    fmt = FORMATS[name]
    codes = torch.arange(2**fmt.bits)
    ref = _codes_as(fmt, codes)
    mine = torch.tensor([fmt.decode(c) for c in range(2**fmt.bits)], dtype=torch.float64)
    assert torch.equal(torch.isnan(ref), torch.isnan(mine))
    ok = ~torch.isnan(ref)
    assert torch.equal(ref[ok], mine[ok]) and torch.equal(ref[ok].signbit(), mine[ok].signbit())


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16", "fp8_e5m2", "fp8_e4m3fn"])
def test_encode_gives_torchs_bit_patterns(name):
    fmt = FORMATS[name]
    g = torch.Generator().manual_seed(0)
    if fmt.bits == 8:
        codes = torch.arange(256)
    else:   # a sample of patterns, all exponents included
        codes = torch.randint(0, 2**fmt.bits, (1500,), generator=g)
    values = _codes_as(fmt, codes)
    for code, v in zip(codes.tolist(), values.tolist()):
        if math.isnan(v):
            assert math.isnan(fmt.decode(fmt.encode(v)))
        else:
            assert fmt.encode(v) == code % 2**fmt.bits, (name, v)
    # NaN payloads differ between torch's cast paths; any NaN pattern must decode to NaN
    assert math.isnan(fmt.decode(fmt.encode(float("nan"))))


@pytest.mark.parametrize("fmt", REAL, ids=lambda f: f.name)
def test_round_equals_torch_cast(fmt):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20000, generator=g) * torch.exp2(torch.randint(-40, 40, (20000,), generator=g).float())
    edges = [0.0, -0.0, math.inf, -math.inf, math.nan, 65504.0, 65519.0, 65520.0, 448.0, 464.0, 465.0,
             480.0, 1e6, 57344.0, 61439.0, 61440.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 1 + 2.0**-8, 1 + 3 * 2.0**-9,
             2.0**-149, 2.0**-150, 3.4028235e38, -70000.0]
    x = torch.cat([x, torch.tensor(edges)]).float()
    ref = x.to(fmt.dtype).double()
    mine = fmt.round(x, saturate=_torch_saturates() if fmt.finite_only else None)
    both_nan = torch.isnan(ref) & torch.isnan(mine)
    assert torch.equal(torch.isnan(ref), torch.isnan(mine))
    assert torch.equal(ref[~both_nan], mine[~both_nan])
    assert torch.equal(ref[~both_nan].signbit(), mine[~both_nan].signbit())


def _torch_saturates() -> bool:
    """Whether this torch's cast to float8_e4m3fn saturates (2.13 does; older versions give NaN)."""
    return torch.tensor([1000.0]).to(torch.float8_e4m3fn).float().item() == 448.0


def test_overflow_modes():
    e4m3, fp16 = FORMATS["fp8_e4m3fn"], FORMATS["fp16"]
    x = [464.0, 470.0, 1000.0, math.inf, -1000.0]
    assert e4m3.round(x).tolist() == [448.0, 448.0, 448.0, 448.0, -448.0]              # saturating (default)
    assert [v if not math.isnan(v) else "nan" for v in e4m3.round(x, saturate=False).tolist()] == \
        [448.0, "nan", "nan", "nan", "nan"]                                               # 464 is a tie -> 448
    assert fp16.round([65519.0, 65520.0, -1e5]).tolist() == [65504.0, math.inf, -math.inf]
    assert fp16.round([65520.0], saturate=True).tolist() == [65504.0]


def test_tf32_rounding_keeps_10_mantissa_bits():
    tf32 = FORMATS["tf32"]
    assert tf32.round(1 + 2.0**-10).item() == 1 + 2.0**-10
    assert tf32.round(1 + 2.0**-11).item() == 1.0                   # tie -> even
    assert tf32.round(1 + 3 * 2.0**-11).item() == 1 + 2 * 2.0**-10   # tie -> even (up)
    assert tf32.bit_string(1.0) == "0 01111111 0000000000"


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
def test_spacing_equals_nextafter(name):
    fmt = FORMATS[name]
    x = torch.logspace(-40 if fmt.exponent_bits == 8 else -7, 4, 500, dtype=torch.float64).to(fmt.dtype)
    x = x[x > 0]
    gap = (torch.nextafter(x, torch.tensor(math.inf, dtype=fmt.dtype)) - x).double()
    assert torch.equal(fmt.spacing(x.double()), gap)
    assert fmt.spacing(0.0).item() == fmt.smallest_subnormal == fmt.spacing(fmt.smallest_subnormal).item()


def test_cast_report_hand_computed():
    v = torch.tensor([1e-8, 1e-5, 1.0, 7e4, 0.0])
    r = precision.cast_report(v, torch.float16)
    assert r == {"n": 4, "flushed_to_zero": 0.25, "subnormal": 0.25, "overflow": 0.25}
    r = precision.cast_report(v, torch.float16, scale=2.0**10)   # 1e-8 * 1024 is subnormal now; 1024 fine
    assert r == {"n": 4, "flushed_to_zero": 0.0, "subnormal": 0.25, "overflow": 0.25}


# --------------------------------------------------------------------------- loss scaling
def _regression(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _run(scaler, inject, steps=30, seed=0):
    """Train a small regression with `scaler`; gradients of the steps in `inject` get an inf/NaN."""
    model = _regression(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed + 1)
    scales, skipped = [], []
    for step in range(steps):
        x = torch.randn(32, 8, generator=g)
        loss = (model(x).squeeze(-1) - x.sum(-1)).pow(2).mean()
        scaler.scale(loss).backward()
        if step in inject:
            model[0].weight.grad[0, step % 8] = inject[step]
        scaler.unscale_(optimizer=opt) if step % 2 else None     # step() unscales when we do not
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        skipped.append(all(torch.equal(b, p) for b, p in zip(before, model.parameters())))
        scales.append(scaler.get_scale())
        opt.zero_grad(set_to_none=True)
    return scales, skipped, [p.detach() for p in model.parameters()]


@pytest.mark.parametrize("kw", [dict(growth_interval=3),
                                dict(init_scale=1000.0, growth_factor=1.7, backoff_factor=0.3, growth_interval=4)],
                         ids=["pow2", "odd-factors"])
def test_scaler_makes_gradscalers_decisions(kw):
    inject = {2: math.inf, 3: -math.inf, 9: math.nan, 10: math.inf, 25: math.inf}
    torch_scaler = torch.amp.GradScaler("cpu", **kw)
    ours = DynamicLossScaler(**kw)
    ref_scales, ref_skipped, ref_params = _run(torch_scaler, inject)
    scales, skipped, params = _run(ours, inject)
    assert skipped == ref_skipped
    assert scales == ref_scales                       # same fp32 values, step by step
    for a, b in zip(params, ref_params):
        assert torch.equal(a, b)                      # and bit-identical weights
    assert ours.skipped == sum(ref_skipped) >= len(inject)
    if kw.get("growth_interval") == 3:   # the scale went down and back up
        assert min(scales) < 2.0**16 and max(scales) > min(scales)


def test_scaler_on_given_gradients_including_fp32_overflow_of_the_scale():
    """Feed both scalers the same gradients directly; growth past fp32's max must be refused."""
    grads = [1.0, 1.0, 1.0, math.inf, 1.0, 1.0, 1.0, math.nan, 1.0, -math.inf, 1.0, 1.0, 1.0, 1.0]
    trajectories = []
    for scaler in (torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=2),
                   DynamicLossScaler(init_scale=2.0**127, growth_interval=2)):
        w = torch.nn.Parameter(torch.zeros(3))
        opt = torch.optim.SGD([w], lr=1.0)
        scaler.scale(torch.tensor(1.0))                   # GradScaler sets its scale up lazily here
        out = []
        for g in grads:
            w.grad = torch.tensor([g, 2.0, 3.0])
            scaler.step(opt)
            scaler.update()
            out.append((scaler.get_scale(), w.detach().clone().tolist()))
        trajectories.append(out)
    assert trajectories[0] == trajectories[1]
    scales = [s for s, _ in trajectories[1]]
    assert scales[:3] == [2.0**127] * 3 and scales[3] == 2.0**126   # growth refused, then backoff
    assert max(scales) == 2.0**127 and scales[-1] == 2.0**127


def test_scaler_plugs_into_the_training_loop(tiny_config):
    def stream():
        g = torch.Generator().manual_seed(0)
        return torch.randint(3, 256, (3000,), generator=g)

    runs = {}
    for label, scaler in [("torch", torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=2)),
                          ("ours", DynamicLossScaler(init_scale=2.0**20, growth_interval=2))]:
        model = models.build(tiny_config, device="cpu", seed=0)
        cfg = train.TrainConfig(steps=6, lr=1e-3, precision="fp16-mixed", progress=False)
        h = train.train(model, train.random_batches(stream(), 2, 16, seed=0), cfg, scaler=scaler)
        runs[label] = (h, scaler.get_scale(), [p.detach().clone() for p in model.parameters()])
    (h1, s1, p1), (h2, s2, p2) = runs["torch"], runs["ours"]
    assert h1.loss == h2.loss and h1.skipped_steps == h2.skipped_steps and s1 == s2
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))


def test_scaler_misuse_is_clear():
    with pytest.raises(LabkitError, match="growth_factor"):
        DynamicLossScaler(growth_factor=1.0)
    with pytest.raises(LabkitError, match="backoff_factor"):
        DynamicLossScaler(backoff_factor=1.5)
    model = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = DynamicLossScaler()
    with pytest.raises(RuntimeError, match="No inf checks were recorded prior to update"):
        s.update()
    s.scale(model(torch.ones(1, 8)).sum()).backward()
    s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already"):
        s.unscale_(opt)
    # an fp16 loss is promoted to fp32 by the fp32 scale instead of overflowing
    assert s.scale(torch.tensor(2.0, dtype=torch.float16)).item() == 2.0**17


# --------------------------------------------------------------------------- GradScaler's API, side by side
def _both(**kw):
    """A GradScaler and a DynamicLossScaler built from the same arguments."""
    return {"torch": torch.amp.GradScaler("cpu", **kw), "labkit": DynamicLossScaler("cpu", **kw)}


def _two_optimizer_step(scaler, bad=None):
    """One backward, then one step per optimizer: w1 and w2 get gradient 1 each (lr 1: each should move by -1)."""
    w1, w2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    o1, o2 = torch.optim.SGD([w1], lr=1.0), torch.optim.SGD([w2], lr=1.0)
    scaler.scale(w1.sum() + w2.sum()).backward()
    if bad is not None:
        (w1, w2)[bad].grad[0] = math.inf
    scaler.unscale_(o1)                      # the first one explicitly, the second inside step()
    returned = (scaler.step(o1), scaler.step(o2))
    scaler.update()
    return w1.detach().tolist(), w2.detach().tolist(), returned, scaler.get_scale()


@pytest.mark.parametrize("bad", [None, 0, 1], ids=["clean", "inf-in-first", "inf-in-second"])
def test_two_optimizers_are_unscaled_and_checked_separately(bad):
    runs = {name: _two_optimizer_step(s, bad) for name, s in _both(init_scale=128.0).items()}
    assert runs["labkit"] == runs["torch"]
    w1, w2, _, scale = runs["labkit"]
    moved = [w != [0.0, 0.0] for w in (w1, w2)]
    assert moved == [bad != 0, bad != 1]                       # only the overflowing optimizer skips
    assert (w2 if bad != 1 else w1) == [-1.0, -1.0]            # unscaled: -1, not -128
    assert scale == (128.0 if bad is None else 64.0)           # one overflow anywhere backs off


def _misuse(scaler, calls):
    """Run `calls` (names) on one optimizer after one scaled backward; return the first error's (type, text)."""
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler.scale(w.sum()).backward()
    try:
        for name in calls:
            getattr(scaler, name)(opt)
    except RuntimeError as e:
        return str(e)
    return None


@pytest.mark.parametrize("calls", [["unscale_", "unscale_"], ["step", "step"], ["step", "unscale_"],
                                   ["unscale_", "step"]])
def test_per_optimizer_state_machine_raises_like_gradscaler(calls):
    got = {name: _misuse(s, calls) for name, s in _both().items()}
    assert got["labkit"] == got["torch"]
    assert (got["labkit"] is None) == (calls == ["unscale_", "step"])
    # and after update() the optimizer is ready again
    s = DynamicLossScaler()
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    for _ in range(2):
        s.scale(w.sum()).backward()
        s.unscale_(opt)
        s.step(opt)
        s.update()


def test_sparse_gradients_are_unscaled_and_checked_like_gradscaler():
    out = {}
    for name, scaler in _both(init_scale=4.0).items():
        torch.manual_seed(0)
        emb = torch.nn.Embedding(6, 3, sparse=True)
        opt = torch.optim.SGD(emb.parameters(), lr=0.5)
        trace = []
        for step in range(3):
            scaler.scale(emb(torch.tensor([1, 4, 1])).square().sum()).backward()   # index 1 twice: uncoalesced
            assert emb.weight.grad.is_sparse
            if step == 1:
                emb.weight.grad._values()[0, 0] = math.inf
            scaler.unscale_(opt)
            trace.append(emb.weight.grad.to_dense().clone())
            scaler.step(opt)
            scaler.update()
            trace.append(scaler.get_scale())
            opt.zero_grad(set_to_none=True)
        out[name] = (trace, emb.weight.detach().clone())
    (t_ref, w_ref), (t, w) = out["torch"], out["labkit"]
    assert [x if isinstance(x, float) else None for x in t] == [x if isinstance(x, float) else None for x in t_ref]
    for a, b in zip(t, t_ref):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(w, w_ref) and t[3] == 2.0           # the inf step was skipped, the scale halved


class _SGDReturning(torch.optim.SGD):
    def step(self, closure=None):
        super().step()
        return "stepped"


def test_step_returns_what_optimizer_step_returns_or_none_when_skipped():
    for name, scaler in _both().items():
        w = torch.nn.Parameter(torch.ones(2))
        opt = _SGDReturning([w], lr=0.1)
        scaler.scale(w.sum()).backward()
        assert scaler.step(opt) == "stepped", name
        scaler.update()
        scaler.scale(w.sum()).backward()
        w.grad[0] = math.nan
        assert scaler.step(opt) is None, name
        with pytest.raises(RuntimeError, match="Closure"):
            scaler.step(opt, closure=lambda: 0.0)


def test_state_dict_getters_and_setters_match_gradscaler():
    scalers = _both(init_scale=2.0**10, growth_factor=3.0, backoff_factor=0.25, growth_interval=3)
    for s in scalers.values():                       # five steps: one overflow, then two clean
        w = torch.nn.Parameter(torch.ones(2))
        opt = torch.optim.SGD([w], lr=0.1)
        for step in range(5):
            s.scale(w.sum()).backward()
            if step == 2:
                w.grad[0] = math.inf
            s.step(opt)
            s.update()
            opt.zero_grad()
    ref, ours = scalers["torch"].state_dict(), scalers["labkit"].state_dict()
    assert ours == ref and list(ours) == ["scale", "growth_factor", "backoff_factor", "growth_interval",
                                          "_growth_tracker"]
    assert ours["_growth_tracker"] == 2 and ours["scale"] == 2.0**8
    # each loads the other's state dict
    for load_into, src in ((DynamicLossScaler(), ref), (torch.amp.GradScaler("cpu"), ours)):
        load_into.load_state_dict(src)
        assert load_into.state_dict() == ref
    for name, s in _both().items():
        s.set_growth_factor(4.0)
        s.set_backoff_factor(0.125)
        s.set_growth_interval(7)
        got = (s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval(), s.is_enabled(), s.get_scale())
        assert got == (4.0, 0.125, 7, True, 2.0**16), name
    with pytest.raises(RuntimeError, match="empty"):
        DynamicLossScaler().load_state_dict({})
    with pytest.raises(LabkitError, match="growth_factor"):
        DynamicLossScaler().set_growth_factor(0.5)


def test_disabled_scaler_is_a_pass_through_like_gradscaler():
    for name, s in _both(enabled=False).items():
        w = torch.nn.Parameter(torch.ones(2))
        opt = _SGDReturning([w], lr=1.0)
        loss = w.sum()
        assert s.scale(loss) is loss
        loss.backward()
        s.unscale_(opt)
        s.unscale_(opt)                                # no-ops, no state machine
        assert s.step(opt) == "stepped" and w.tolist() == [0.0, 0.0], name
        s.update()
        assert (s.get_scale(), s.state_dict(), s.is_enabled()) == (1.0, {}, False), name
        s.load_state_dict({"scale": 5.0})              # ignored
        assert s.get_scale() == 1.0


@pytest.mark.parametrize("new_scale", [1024.0, torch.tensor(3.0e-3)], ids=["float", "tensor"])
def test_update_with_new_scale(new_scale):
    out = {}
    for name, s in _both(growth_interval=2).items():
        w = torch.nn.Parameter(torch.ones(2))
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(3):
            s.scale(w.sum()).backward()
            s.step(opt)
            s.update(new_scale)
        out[name] = s.state_dict()
    assert out["labkit"] == out["torch"] and out["labkit"]["scale"] == torch.tensor(float(new_scale)).item()
    with pytest.raises(LabkitError, match="1-element"):
        DynamicLossScaler().update(torch.ones(2))


def test_scale_of_nested_outputs_matches_gradscaler():
    t = lambda v, dt=torch.float32: torch.full((2,), v, dtype=dt)  # noqa: E731
    outputs = (t(1.0), [t(2.0), (t(3.0, torch.float16), t(4.0))], [])
    got = {name: s.scale(outputs) for name, s in _both(init_scale=8.0).items()}

    def shape(x):
        return (type(x), [shape(y) for y in x]) if isinstance(x, (list, tuple)) else (x.dtype, x.tolist())

    assert shape(got["labkit"]) == shape(got["torch"])
    assert got["labkit"][1][1][0].tolist() == [24.0, 24.0]
    # other iterables come back as a lazy map, as in GradScaler
    lazy = {name: s.scale(iter([t(1.0), t(2.0)])) for name, s in _both(init_scale=8.0).items()}
    assert isinstance(lazy["labkit"], map) and isinstance(lazy["torch"], map)
    assert [x.tolist() for x in lazy["labkit"]] == [x.tolist() for x in lazy["torch"]]
    for s in _both().values():
        with pytest.raises(ValueError, match="Tensor or an iterable"):
            s.scale(3.0)
    with pytest.raises(LabkitError, match="dict"):       # GradScaler would iterate the keys
        DynamicLossScaler().scale({"loss": t(1.0)})
    with pytest.raises(LabkitError, match="by keyword"):
        DynamicLossScaler(1024.0)


def test_gpu_benchmark_code_path_on_cpu(tmp_path):
    from labkit import results
    from labkit.bench import precision as bench

    rows = bench.run(quick=True, device="cpu", configs=["fp32", "fp16-mixed (labkit scaler)", "bf16 (pure)"])
    assert [r["config"] for r in rows] == ["fp32", "fp16-mixed (labkit scaler)", "bf16 (pure)"]
    assert rows[0]["speedup_vs_fp32"] == 1.0 and all(r["step_ms"] > 0 for r in rows)
    meta, back = results.read_csv(results.write_csv(tmp_path / "p.csv", rows))
    assert back[1]["scaler"] == "labkit" and back[2]["precision"] == "bf16"
    with pytest.raises(LabkitError, match="GPU"):
        bench.run(device="cpu")


# --------------------------------------------------------------------------- lab 02: update rule, SR, fp16 emulation
def test_update_scale_is_torchs_update_kernel():
    g = torch.Generator().manual_seed(0)
    cases = [(2.0**127, 1, False, 2.0, 0.5, 2), (torch.tensor(3.0e38).item(), 0, False, 1.5, 0.5, 1), (1.0, 0, True, 2.0, 0.25, 5)]
    for _ in range(500):
        interval = int(torch.randint(1, 6, (1,), generator=g))
        scale = torch.tensor(2.0 ** float(torch.randint(-20, 128, (1,), generator=g))).float().item()
        cases.append((scale, int(torch.randint(0, interval, (1,), generator=g)), bool(torch.rand(1, generator=g) < 0.3),
                      1 + 2 * torch.rand(1, generator=g).item(), 0.05 + 0.9 * torch.rand(1, generator=g).item(), interval))
    for scale, tracker, found, growth, backoff, interval in cases:
        s, t = torch.tensor([scale]), torch.tensor([tracker], dtype=torch.int32)
        torch._amp_update_scale_(s, t, torch.tensor([float(found)]), growth, backoff, interval)
        assert precision.update_scale(scale, tracker, found, growth, backoff, interval) == (s.item(), int(t.item()))


def test_stochastic_round_bf16_is_unbiased_and_a_neighbour():
    x = torch.randn(5000, generator=torch.Generator().manual_seed(0)) * 1e-2 + 1.0
    draws = torch.stack([precision.stochastic_round_bf16(x, torch.Generator().manual_seed(k)).float() for k in range(200)])
    down = (x.view(torch.int32) & ~0xFFFF).view(torch.float32)
    up = torch.nextafter(down.to(torch.bfloat16), torch.tensor(math.inf, dtype=torch.bfloat16)).float()
    assert ((draws == down) | (draws == up)).all()
    assert (draws.mean(0) - x).abs().mean() < (x.to(torch.bfloat16).float() - x).abs().mean() / 4
    special = precision.stochastic_round_bf16(torch.tensor([math.nan, math.inf, -math.inf, 0.0, -2.0]))
    assert special[0].isnan() and special[1:].tolist() == [math.inf, -math.inf, 0.0, -2.0]
    with pytest.raises(LabkitError, match="fp32"):
        precision.stochastic_round_bf16(torch.ones(2, dtype=torch.float16))


def test_fp16_emulation_matches_autocast_and_restores_the_model():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 24)
    x = torch.randn(3, 8, 32, requires_grad=True)
    grad = torch.randn(3, 8, 24) * 2.0**-24                     # many gradients below fp16's range
    out = {}
    for mode in ("autocast", "emulated"):
        x.grad, lin.weight.grad, lin.bias.grad = None, None, None
        ctx = torch.autocast("cpu", dtype=torch.float16) if mode == "autocast" else precision.emulate_fp16_autocast(lin)
        with ctx:
            y = lin(x)
        y.backward(grad.to(y.dtype))
        out[mode] = [y.detach().float(), x.grad.clone(), lin.weight.grad.clone(), lin.bias.grad.clone()]
    for a, b in zip(out["emulated"], out["autocast"]):
        assert (a - b).abs().max() <= 2.0**-10 * b.abs().max()
    assert torch.equal(out["emulated"][1] == 0, out["autocast"][1] == 0) and (out["autocast"][1] == 0).any()
    assert "forward" not in vars(lin) and lin(x).dtype == torch.float32       # the context restored the layer
    two = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        two.weight.fill_(1.0)
    with precision.emulate_fp16_autocast(two):
        assert two(torch.tensor([[4e4, 4e4]])).isinf().all()                  # 80,000 overflows fp16


def test_bf16_adamw_master_is_torch_adamw_and_roundings_differ_as_they_should():
    g = torch.Generator().manual_seed(0)
    start = (torch.randn(40, 20, generator=g) * 0.05).to(torch.bfloat16)
    grads = [torch.randn(40, 20, generator=g).to(torch.bfloat16) for _ in range(5)]
    final = {}
    for rounding in precision.Bf16AdamW.ROUNDINGS:
        p, ref = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.float())
        opt = precision.Bf16AdamW([p], lr=1e-3, weight_decay=0.1, rounding=rounding, generator=torch.Generator().manual_seed(1))
        torch_opt = torch.optim.AdamW([ref], lr=1e-3, weight_decay=0.1, foreach=False)
        for grad in grads:
            p.grad, ref.grad = grad.clone(), grad.float()
            opt.step()
            torch_opt.step()
        if rounding == "master":
            assert torch.equal(opt.state[p]["master"], ref.detach()) and torch.equal(p.detach(), ref.detach().to(torch.bfloat16))
        final[rounding] = p.detach().clone()
    assert not torch.equal(final["nearest"], final["stochastic"])
    with pytest.raises(LabkitError, match="rounding"):
        precision.Bf16AdamW([torch.nn.Parameter(start.clone())], rounding="up")
