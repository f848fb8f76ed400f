"""labkit.quant against bitsandbytes (CPU) and against hand-computed values."""
import math

import pytest
import torch

from labkit import LabkitError, quant

bnb = pytest.importorskip("bitsandbytes")
F = pytest.importorskip("bitsandbytes.functional")

DTYPES = [torch.float32, torch.bfloat16]
# Rows are whole blocks of 64 (as in every Llama linear layer), plus a 1-D tensor
# and a row that spans several blocks.
SHAPES = [(64,), (4096,), (128, 64), (256, 256), (3, 320), (768, 256)]


def _weights(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 0.02
    w.view(-1)[::97] = 0.0                      # some exact zeros
    return w.to(dtype)


# ---------------------------------------------------------------------------
# NF4 levels and the quantizer, by hand
# ---------------------------------------------------------------------------
def test_nf4_levels_are_bitsandbytes_table():
    assert torch.equal(quant.NF4_LEVELS, F.get_4bit_type("nf4", device="cpu"))


def test_nf4_levels_shape_by_hand():
    lv = quant.NF4_LEVELS
    assert lv.numel() == 16 and lv[0] == -1 and lv[-1] == 1 and lv[7] == 0
    assert torch.all(lv[1:] > lv[:-1])
    # 8 positive, 7 negative levels; the largest positive quantile is Phi^-1(0.9677083) ~ 1.848
    assert (lv > 0).sum() == 8 and (lv < 0).sum() == 7
    top = torch.special.ndtri(torch.tensor(quant.NF4_OFFSET, dtype=torch.float64)).item()
    second = torch.special.ndtri(torch.linspace(quant.NF4_OFFSET, 0.5, 9)[1].double()).item()
    assert math.isclose(lv[-2].item(), second / top, rel_tol=1e-6)


def test_nf4_quantize_by_hand():
    # one block: absmax 2.0; x/absmax exactly on levels, and one exact midpoint
    lv = quant.NF4_LEVELS
    mid = ((lv[9] + lv[10]) / 2).item()
    values = torch.zeros(64)
    values[0], values[1], values[2], values[3] = 2.0, -2.0, 2.0 * lv[12].item(), 2.0 * mid
    packed, absmax = quant.nf4_quantize(values)
    assert absmax.tolist() == [2.0]
    codes = quant.unpack_4bit(packed)
    assert codes[:5].tolist() == [15, 0, 12, 9, 7]        # midpoint -> lower code; 0 -> code 7
    assert packed[0].item() == (15 << 4) | 0              # first of a pair in the HIGH nibble
    assert packed[1].item() == (12 << 4) | 9


def test_bad_block_size_or_input_is_one_clear_line():
    with pytest.raises(LabkitError) as err:
        quant.nf4_quantize(torch.randn(64), blocksize=63)
    assert "\n" not in str(err.value) and "even" in str(err.value)
    with pytest.raises(LabkitError):
        quant.nf4_quantize(torch.randint(0, 5, (64,)))
    with pytest.raises(LabkitError, match="empty"):
        quant.nf4_quantize(torch.randn(0))


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_partial_last_block_and_odd_sizes_as_bitsandbytes(quant_type, dtype):
    # bitsandbytes gives a last, partial block its own absmax and pads an odd count with the
    # code of 0; labkit does the same, byte for byte.
    gen = torch.Generator().manual_seed(3)
    for n, bs in [(1, 64), (3, 64), (63, 64), (65, 64), (100, 64), (129, 128), (1000, 256), (4097, 64)]:
        w = (torch.randn(n, generator=gen) * 3).to(dtype)
        ref, state = F.quantize_4bit(w, blocksize=bs, quant_type=quant_type)
        packed, absmax = quant.quantize_4bit(w, bs, quant_type)
        assert torch.equal(packed, ref.view(-1)), (n, bs)
        assert torch.equal(absmax, state.absmax), (n, bs)
        back = quant.dequantize_4bit(packed, absmax, (n,), bs, quant_type, dtype)
        assert torch.equal(back, F.dequantize_4bit(ref, state).view(-1)), (n, bs)
    assert quant.nf4_nbytes(100) == 50 + 4 * 2


@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16, torch.float32, torch.int8], ids=str)
def test_quant_storage_views_the_same_bytes_as_bitsandbytes(storage):
    w = _weights((32, 64), torch.float32, seed=4)
    ref, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", quant_storage=storage)
    packed, absmax = quant.quantize_4bit(w, 64, "nf4", quant_storage=storage)
    assert packed.dtype == ref.dtype == storage and packed.numel() == ref.numel()
    assert torch.equal(packed.view(torch.uint8), ref.view(-1).view(torch.uint8))
    assert torch.equal(quant.dequantize_4bit(packed, absmax, w.shape), F.dequantize_4bit(ref, state))
    with pytest.raises(LabkitError, match="cannot be viewed"):
        quant.quantize_4bit(torch.randn(6), 64, "nf4", quant_storage=torch.float32)
    with pytest.raises(LabkitError, match="quant_storage must be"):
        quant.quantize_4bit(torch.randn(64), 64, "nf4", quant_storage=torch.float64)


# ---------------------------------------------------------------------------
# NF4 against bitsandbytes: same bytes, same absmax, same dequantized values
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nf4_bit_identical_to_bitsandbytes(shape, dtype):
    w = _weights(shape, dtype)
    q_ref, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
    packed, absmax = quant.nf4_quantize(w)
    assert q_ref.shape == (w.numel() // 2, 1)
    assert torch.equal(packed, q_ref.view(-1))
    assert torch.equal(absmax, state.absmax)
    ref = F.dequantize_4bit(q_ref, state)
    ours = quant.nf4_dequantize(packed, absmax, shape, dtype=dtype)
    assert ours.dtype == dtype and ours.shape == torch.Size(shape)
    assert torch.equal(ours, ref.reshape(shape))   # bnb returns (1, n) for a 1-D tensor


def test_nf4_round_trip_error_is_bounded():
    w = _weights((64, 320), torch.float32, seed=3)
    packed, absmax = quant.nf4_quantize(w)
    back = quant.nf4_dequantize(packed, absmax, w.shape)
    gap = (quant.NF4_LEVELS[1:] - quant.NF4_LEVELS[:-1]).max() / 2
    err = (back - w).abs().view(-1, 64) / absmax[:, None]
    assert err.max() <= gap + 1e-6
    assert torch.equal(back.view(-1, 64).abs().amax(1), absmax)   # each block's absmax is exact


# ---------------------------------------------------------------------------
# Double quantization
# ---------------------------------------------------------------------------
def test_dynamic_map_is_bitsandbytes():
    assert torch.equal(quant.DYNAMIC_MAP, F.create_dynamic_map())


def test_blockwise_quantize_by_hand():
    code = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    x = torch.tensor([0.25, 0.75, -0.3, 2.0, 1.0, -0.5])        # blocks of 4: absmax 2.0, then 1.0
    q, absmax = quant.blockwise_quantize(x, code, blocksize=4)
    assert absmax.tolist() == [2.0, 1.0]
    # 0.125 -> 0 (nearest), 0.375 -> 0.5, -0.15 -> 0, 1 -> 1 | 1 -> 1, -0.5 -> -0.5
    assert q.tolist() == [2, 3, 2, 4, 4, 1]
    tie, _ = quant.blockwise_quantize(torch.tensor([0.25, 1.0]), code, blocksize=2)
    assert tie.tolist() == [2, 4]                                  # exactly between 0 and 0.5 -> lower
    back = quant.blockwise_dequantize(q, absmax, code, blocksize=4)
    assert back.tolist() == [0.0, 1.0, 0.0, 2.0, 1.0, -0.5]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_double_quantization_against_bitsandbytes(dtype):
    w = _weights((1024, 512), dtype, seed=1)
    q_ref, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    packed, absmax = quant.nf4_quantize(w)
    dq = quant.double_quantize(absmax)
    assert state.nested and state.state2.blocksize == 256
    assert torch.equal(packed, q_ref.view(-1))
    assert torch.equal(dq.offset, state.offset)
    assert torch.equal(dq.absmax2, state.state2.absmax)
    # bitsandbytes' CPU kernel searches the code book approximately: a few codes differ
    # by a step, and where they do, ours is the nearer code value.
    same = (dq.codes == state.absmax).float().mean().item()
    assert same > 0.99
    target = (absmax - dq.offset) / dq.absmax2.repeat_interleave(256)[: absmax.numel()]
    ours = (target - quant.DYNAMIC_MAP[dq.codes.long()]).abs()
    theirs = (target - quant.DYNAMIC_MAP[state.absmax.long()]).abs()
    assert torch.all(ours <= theirs)
    # dequantizing bitsandbytes' own nested state our way gives its exact weights
    ref_absmax = quant.double_dequantize(quant.DoubleQuant(state.absmax, state.state2.absmax, state.offset))
    ours_w = quant.nf4_dequantize(q_ref.view(-1), ref_absmax, w.shape, dtype=dtype)
    assert torch.equal(ours_w, F.dequantize_4bit(q_ref, state))


def test_bits_per_parameter():
    assert quant.bits_per_param() == 4.5
    assert quant.bits_per_param(double_quant=True) == 4 + 8 / 64 + 32 / (64 * 256)
    assert round(quant.bits_per_param(double_quant=True), 3) == 4.127
    n = 4096 * 11008
    assert quant.nf4_nbytes(n) == n // 2 + 4 * n // 64
    w = _weights((4096, 64), torch.float32)
    q, st = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    stored = q.numel() + st.absmax.numel() + 4 * st.state2.absmax.numel() + 4
    assert quant.nf4_nbytes(w.numel(), double_quant=True) == stored


# ---------------------------------------------------------------------------
# int8: absmax, vector-wise, LLM.int8()
# ---------------------------------------------------------------------------
def _activations(seed=0, outliers=(3, 77, 200)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 256, generator=g)
    x[:, list(outliers)] *= 25
    return x.half()


def test_absmax_int8_by_hand():
    q, absmax = quant.absmax_quantize(torch.tensor([0.5, -1.0, 0.25, 0.0]))
    assert absmax.item() == 1.0 and q.tolist() == [64, -127, 32, 0]   # round(63.5) = 64 (half to even)
    back = quant.absmax_dequantize(q, absmax)
    assert torch.allclose(back, torch.tensor([64 / 127, -1.0, 32 / 127, 0.0]))


def test_vectorwise_int8_is_bitsandbytes():
    x = _activations()
    codes, stats, _ = F.int8_vectorwise_quant(x.clone(), threshold=0.0)
    q, absmax = quant.absmax_quantize(x, dim=-1)
    assert torch.equal(q, codes) and torch.equal(absmax.squeeze(1), stats)


def test_llm_int8_outlier_split_is_bitsandbytes():
    x = _activations()
    codes, stats, cols = F.int8_vectorwise_quant(x.clone(), threshold=6.0)
    assert torch.equal(quant.outlier_columns(x), cols) and cols.tolist() == [3, 77, 200]
    regular = x.masked_fill(x.abs() >= 6.0, 0)
    q, absmax = quant.absmax_quantize(regular, dim=-1)
    q[:, cols] = 0
    assert torch.equal(q, codes) and torch.equal(absmax.squeeze(1), stats)


def test_llm_int8_matmul_matches_bitsandbytes_and_beats_plain_int8():
    x = _activations()
    w = torch.randn(128, 256, generator=torch.Generator().manual_seed(1)) * 0.05
    layer = bnb.nn.Linear8bitLt(256, 128, bias=False, has_fp16_weights=False, threshold=6.0)
    layer.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    layer = layer.to("cpu").eval()        # eval: the real LLM.int8() path (training on CPU dequantizes)
    with torch.no_grad():
        ref = layer(x).float()
    # bitsandbytes keeps only the int8 weights, so its outlier part uses them dequantized
    qw, sw = quant.absmax_quantize(w.half(), dim=-1)
    ours = quant.llm_int8_matmul(x.float(), quant.absmax_dequantize(qw, sw))
    assert ((ours - ref).norm() / ref.norm()).item() < 1e-3     # bitsandbytes returns fp16
    exact = x.float() @ w.half().float().T
    rel = lambda a: ((a - exact).norm() / exact.norm()).item()  # noqa: E731
    assert rel(quant.llm_int8_matmul(x.float(), w)) < rel(quant.int8_matmul(x.float(), w)) / 4


# ---------------------------------------------------------------------------
# The 4-bit linear layer and whole models
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_linear4bit_equals_bitsandbytes_forward_and_backward(compute_dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 192, bias=True)
    ours = quant.Linear4bit.from_linear(lin, compute_dtype=compute_dtype)
    theirs = quant.quantize_model(torch.nn.Sequential(lin), backend="bnb", compute_dtype=compute_dtype)[0]
    assert isinstance(theirs, bnb.nn.Linear4bit)
    theirs.train()   # CPU eval mode switches bitsandbytes to a bf16 inference kernel
    assert torch.equal(ours.packed, theirs.weight.data.view(-1))
    x1 = torch.randn(3, 5, 256, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    assert y1.dtype == torch.float32 and torch.equal(y1, y2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    assert torch.equal(x1.grad, x2.grad)


def test_linear4bit_keeps_no_dequantized_weight_for_backward():
    lin = torch.nn.Linear(512, 512, bias=False)
    layer = quant.Linear4bit.from_linear(lin)
    saved = []
    x = torch.randn(2, 512, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        layer(x).sum().backward()
    assert sum(saved) < 512 * 512 / 4          # not the 262,144-value weight
    assert layer.weight_nbytes == 512 * 512 // 2 + 4 * 512 * 512 // 64


def test_quantize_model_backends_agree_and_lora_trains(tiny_config):
    from labkit import lora, models

    def build(backend):
        m = models.build(tiny_config, device="cpu", seed=0)
        torch.manual_seed(1)
        lora.inject_lora(m, r=4, alpha=8)           # LoRA first, then its frozen bases go 4-bit
        quant.quantize_model(m, backend=backend, compute_dtype=torch.bfloat16)
        return m.train()

    a, b = build("labkit"), build("bnb")
    assert isinstance(a.model.layers[0].self_attn.q_proj.base, quant.Linear4bit)
    assert isinstance(a.model.layers[0].mlp.up_proj, quant.Linear4bit)
    assert type(a.lm_head) is torch.nn.Linear        # the output head is not quantized
    ids = torch.randint(0, 256, (2, 16))
    la, lb = a(ids, labels=ids).loss, b(ids, labels=ids).loss
    assert torch.equal(la, lb)
    la.backward()
    trainable = [p for p in a.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert any(p.grad.abs().sum() > 0 for p in trainable)
    assert quant.model_nbytes(a) == quant.model_nbytes(b)
    with pytest.raises(LabkitError):
        quant.quantize_model(a, backend="gguf")


def test_qlora_bench_code_path_on_cpu(tiny_config, tmp_path):
    """`labkit.bench.qlora` end to end on a tiny model: builds each base, trains, measures, estimates."""
    from labkit import results
    from labkit.bench import qlora

    rows = qlora.run([("bf16", 4, 1, 32, False, "adamw"), ("nf4", 4, 2, 32, True, "adamw"),
                      ("nf4", 4, 1, 32, False, "paged-adamw"), ("int8", 4, 1, 32, False, "adamw")],
                     tiny_config, torch.device("cpu"), steps=1, warmup=1)
    assert [r["base"] for r in rows] == ["bf16", "nf4", "int8"]      # no paged optimizer on CPU
    bf16, nf4, int8 = rows
    assert nf4["weights_gb"] < int8["weights_gb"] < bf16["weights_gb"]
    for r in (bf16, nf4):
        assert math.isclose(r["weights_gb"], r["weights_gb_est"], rel_tol=0.02)
        assert math.isclose(r["peak_gb"], r["peak_gb_est"], rel_tol=0.25)
        assert math.isfinite(r["loss"]) and r["step_s"] > 0
    assert int8["peak_gb_est"] is None and "GPU" in int8["note"]
    path = results.write_csv(tmp_path / "qlora.csv", rows)
    meta, back = results.read_csv(path)
    assert back[1]["grad_ckpt"] is True and back[1]["base"] == "nf4"


# ---------------------------------------------------------------------------
# Weight-file size (lab 00, section 5)
# ---------------------------------------------------------------------------
def test_weight_bytes_is_bitsandbytes_nf4_and_keeps_embeddings_in_bf16(tiny_config):
    import copy

    from labkit import models

    model = models.build(tiny_config, device="cpu")
    n = models.count_params(model)
    assert quant.weight_bytes(model, "fp32") == 4 * n and quant.weight_bytes(model, "bf16") == 2 * n
    q4 = quant.quantize_model(copy.deepcopy(model).requires_grad_(False), backend="bnb", double_quant=True)
    quant.cast_frozen(q4, torch.bfloat16)
    nf4 = quant.model_nbytes(q4) - sum(b.numel() * b.element_size() for b in q4.buffers())
    assert quant.weight_bytes(model, "nf4") == nf4
    # Llama-2-7B: the bf16 embeddings and head (2 x 32000 x 4096) come on top of the 4-bit layers
    big = models.build("llama-2-7b", device="meta")
    linear = sum(m.weight.numel() for name, m in big.named_modules()
                 if isinstance(m, torch.nn.Linear) and name != "lm_head")
    assert quant.weight_bytes(big, "int8") == linear + 4 * 32 * (3 * 4096 + 4096 + 2 * 11008 + 4096) + \
        2 * (models.count_params(big) - linear)
    assert round(quant.weight_bytes(big, "nf4") / 1e9, 2) == 3.87
    with pytest.raises(LabkitError, match="unknown weight format"):
        quant.weight_bytes(big, "fp8")


# ---------------------------------------------------------------------------
# FP4, bitsandbytes' other 4-bit type
# ---------------------------------------------------------------------------
def test_fp4_levels_are_bitsandbytes_table():
    """Code order as bitsandbytes: 1 sign, 2 exponent and 1 mantissa bit; 0b011 (=12/12) is 1."""
    assert torch.equal(quant.FP4_LEVELS, F.get_4bit_type("fp4", device="cpu"))
    assert quant.FP4_LEVELS[3] == 1.0 and quant.FP4_LEVELS[11] == -1.0
    assert quant.FP4_LEVELS[6] == pytest.approx(2 / 12) and quant.FP4_LEVELS[1] == pytest.approx(0.0625 / 12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_fp4_bytes_equal_bitsandbytes(shape, dtype):
    w = _weights(shape, dtype, seed=3) * 50
    q_ref, state = F.quantize_4bit(w, blocksize=64, quant_type="fp4")
    packed, absmax = quant.fp4_quantize(w)
    assert torch.equal(packed, q_ref.view(-1)) and torch.equal(absmax, state.absmax)
    ours = quant.fp4_dequantize(packed, absmax, w.shape, dtype=dtype)
    assert torch.equal(ours, F.dequantize_4bit(q_ref, state).reshape(w.shape))


def test_fp4_midpoints_go_to_the_code_bitsandbytes_picks():
    """Values just either side of each midpoint between sorted FP4 levels, and exact midpoints."""
    lv = quant.FP4_LEVELS.sort().values
    mids = (lv[:-1] + lv[1:]) / 2
    x = torch.cat([mids, torch.nextafter(mids, torch.tensor(2.0)), torch.nextafter(mids, torch.tensor(-2.0))])
    x = torch.cat([x, torch.tensor([1.0])])
    x = torch.cat([x, torch.zeros(64 - x.numel() % 64)]) if x.numel() % 64 else x
    q_ref, _ = F.quantize_4bit(x, blocksize=64, quant_type="fp4")
    assert torch.equal(quant.fp4_quantize(x)[0], q_ref.view(-1))


def test_unknown_4bit_type_is_one_line():
    with pytest.raises(LabkitError, match="unknown 4-bit type"):
        quant.quantize_4bit(torch.randn(64), quant_type="int4")
    with pytest.raises(LabkitError, match="unknown 4-bit type"):
        quant.Linear4bit(64, 64, quant_type="af4")


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_fp4_linear_equals_bitsandbytes(compute_dtype, double_quant):
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64)
    ours = quant.Linear4bit.from_linear(lin, compute_dtype=compute_dtype, quant_type="fp4", double_quant=double_quant)
    theirs = quant.quantize_model(torch.nn.Sequential(lin), backend="bnb", compute_dtype=compute_dtype,
                                  quant_type="fp4", double_quant=double_quant)[0].train()
    assert theirs.weight.quant_state.quant_type == "fp4"
    xa = torch.randn(5, 128, requires_grad=True)
    xb = xa.detach().clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    assert torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    assert torch.equal(xa.grad, xb.grad)


# ---------------------------------------------------------------------------
# Quantization state stays fp32 under dtype casts (as bitsandbytes' quant_state)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("cast", ["to_bf16", "half"])
def test_dtype_cast_keeps_quant_state_fp32_like_bitsandbytes(cast, double_quant):
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    ours = quant.Linear4bit.from_linear(lin, double_quant=double_quant)
    theirs = quant.quantize_model(torch.nn.Sequential(lin), backend="bnb", compute_dtype=None,
                                  double_quant=double_quant)[0]
    before = ours.dequantize()
    for m in (ours, theirs):
        m.to(torch.bfloat16) if cast == "to_bf16" else m.half()
    state = theirs.weight.quant_state
    assert state.absmax.dtype == (torch.uint8 if double_quant else torch.float32)
    for name in quant.Linear4bit._STATE:
        if name in ours._buffers:
            assert ours._buffers[name].dtype == torch.float32, name
    assert torch.equal(ours.dequantize(), before)          # unchanged weights
    assert ours.bias.dtype == theirs.bias.dtype            # the bias follows the cast in both
    ref = F.dequantize_4bit(theirs.weight.data, state).float().reshape(64, 256)
    assert torch.equal(ours.dequantize(), ref)


def test_linear4bit_has_no_dense_weight_and_says_what_to_use():
    layer = quant.Linear4bit.from_linear(torch.nn.Linear(64, 64))
    assert not hasattr(layer, "weight")
    with pytest.raises(LabkitError, match="dequantize"):
        layer.weight


# ---------------------------------------------------------------------------
# LoRA on a 4-bit base: labkit's backend behaves like bitsandbytes', and merging
# ---------------------------------------------------------------------------
def _qlora_pair():
    from labkit import lora

    torch.manual_seed(0)
    base = torch.nn.Sequential()
    base.add_module("q_proj", torch.nn.Linear(128, 128))
    base.add_module("v_proj", torch.nn.Linear(128, 64))
    out = {}
    for backend in ("labkit", "bnb"):
        m = __import__("copy").deepcopy(base)
        torch.manual_seed(1)
        lora.inject_lora(m, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
        for layer in lora.lora_layers(m).values():
            torch.nn.init.normal_(layer.lora_B, std=0.05)
        out[backend] = quant.quantize_model(m, backend=backend, compute_dtype=None)
    return out


def test_merge_lora_on_a_4bit_base_is_a_clear_error_for_both_backends():
    from labkit import lora

    for backend, m in _qlora_pair().items():
        with pytest.raises(LabkitError):
            lora.merge_lora(m)


@pytest.mark.parametrize("backend", ["labkit", "bnb"])
def test_merge_lora_4bit_dense_and_requantized(backend):
    import copy

    m = _qlora_pair()[backend]
    x = torch.randn(3, 128)
    y = {n: layer(x) for n, layer in m.named_children()}
    dense = quant.merge_lora_4bit(copy.deepcopy(m), requantize=False)
    for n, layer in dense.named_children():
        assert type(layer) is torch.nn.Linear
        assert torch.allclose(layer(x), y[n], atol=1e-5)
    req = quant.merge_lora_4bit(copy.deepcopy(m))
    for n, layer in req.named_children():
        assert isinstance(layer, quant.Linear4bit)
        expect = quant.Linear4bit.from_linear(getattr(dense, n))      # = quantize(W + sBA) once
        assert torch.equal(layer.packed, expect.packed) and torch.equal(layer.absmax, expect.absmax)
        assert not torch.allclose(layer(x), y[n], atol=1e-5)          # requantizing changes the outputs
    with pytest.raises(LabkitError, match="no LoRA adapters"):
        quant.merge_lora_4bit(req)


def test_merged_4bit_models_agree_across_backends():
    import copy

    pair = _qlora_pair()
    a = quant.merge_lora_4bit(copy.deepcopy(pair["labkit"]))
    b = quant.merge_lora_4bit(copy.deepcopy(pair["bnb"]))
    for (_, la), (_, lb) in zip(a.named_children(), b.named_children()):
        assert torch.equal(la.packed, lb.packed)


# ---------------------------------------------------------------------------
# The dynamic 8-bit map for every argument bitsandbytes accepts
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("total_bits", range(2, 9))
@pytest.mark.parametrize("max_exponent_bits", range(1, 9))
def test_dynamic_map_equals_bitsandbytes_or_refuses(max_exponent_bits, total_bits, signed):
    try:
        ref = F.create_dynamic_map(signed, max_exponent_bits, total_bits)
    except Exception:
        with pytest.raises(LabkitError):
            quant.dynamic_map(max_exponent_bits, total_bits, signed=signed)
        return
    assert torch.equal(quant.dynamic_map(max_exponent_bits, total_bits, signed=signed), ref)


# ---------------------------------------------------------------------------
# quant_storage, partial blocks and the bias dtype of a rebuilt layer
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16, torch.float32], ids=str)
def test_linear4bit_quant_storage_equals_bitsandbytes(storage):
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 48)
    ours = quant.Linear4bit.from_linear(lin, quant_storage=storage)
    theirs = quant.quantize_model(torch.nn.Sequential(lin), backend="bnb", compute_dtype=None,
                                  quant_storage=storage)[0].train()
    assert ours.packed.dtype == theirs.weight.dtype == storage
    assert torch.equal(ours.packed.view(torch.uint8), theirs.weight.data.reshape(-1).view(torch.uint8))
    x = torch.randn(4, 128)
    assert torch.equal(ours(x), theirs(x))
    before = ours.dequantize()
    ours.half()                                             # the packed bytes are never cast
    assert ours.packed.dtype == storage and torch.equal(ours.dequantize(), before)
    assert torch.equal(quant.dequantized_weight(theirs), before)


def test_linear4bit_with_a_partial_last_block_equals_bitsandbytes():
    torch.manual_seed(1)
    lin = torch.nn.Linear(10, 7)                            # 70 weights: one block of 64 + one of 6
    ours = quant.Linear4bit.from_linear(lin, compute_dtype=torch.float32)
    theirs = quant.quantize_model(torch.nn.Sequential(lin), backend="bnb",
                                  compute_dtype=torch.float32)[0].train()
    assert ours.absmax.numel() == 2 and torch.equal(ours.absmax, theirs.weight.quant_state.absmax)
    x = torch.randn(3, 10)
    assert torch.equal(ours(x), theirs(x))
    assert ours.weight_nbytes == 35 + 2 * 4


def test_linear4bit_rebuilt_from_a_state_dict_keeps_the_bias_dtype():
    torch.manual_seed(2)
    lin = torch.nn.Linear(64, 32).to(torch.bfloat16)
    layer = quant.Linear4bit.from_linear(lin, compute_dtype=torch.bfloat16, double_quant=True)
    assert layer.bias.dtype == torch.bfloat16
    state = layer.state_dict()
    plain = quant.Linear4bit(64, 32, compute_dtype=torch.bfloat16, double_quant=True)
    plain.load_state_dict(state)
    assert plain.bias.dtype == torch.float32                # load_state_dict copies into fp32 ...
    rebuilt = quant.Linear4bit(64, 32, compute_dtype=torch.bfloat16, double_quant=True, dtype=torch.bfloat16)
    rebuilt.load_state_dict(state)
    assert rebuilt.bias.dtype == torch.bfloat16             # ... unless dtype says what it was
    assert rebuilt.absmax_offset.dtype == torch.float32     # the quantization state stays fp32
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    assert torch.equal(rebuilt(x), layer(x))
    assert torch.equal(rebuilt.dequantize(), layer.dequantize())
