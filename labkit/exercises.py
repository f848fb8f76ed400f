"""Checkers for the exercises at the end of each lab.

A learner writes an answer in the notebook and calls ``check("00.fp16_max", answer)``.
Each checker computes the expected value *independently* (from torch, or
from a model built on ``meta``), so the notebook never shows the answer.
An unanswered exercise (``None``) just prints a reminder: notebooks still
run top to bottom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .errors import LabkitError


@dataclass(frozen=True)
class Exercise:
    question: str
    expected: Callable[[], float]
    rel_tol: float
    hint: str


def _fp16_max() -> float:
    import torch

    return float(torch.finfo(torch.float16).max)


def _tf32_eps() -> float:
    return 2.0 ** -10  # 10 mantissa bits, like fp16, with fp32's 8 exponent bits


def _llama2_13b_params() -> float:
    from . import models

    return float(models.count_params(models.build("llama-2-13b", device="meta")))


def _llama3_8b_bf16_gb() -> float:
    from . import models

    return 2 * models.count_params(models.build("llama-3-8b", device="meta")) / 1e9


def _e4m3_max() -> float:
    import torch

    return float(torch.finfo(torch.float8_e4m3fn).max)


def _fp16_min_subnormal() -> float:
    import torch

    return torch.tensor(1, dtype=torch.int16).view(torch.float16).item()  # bit pattern 0...01


def _bf16_swallowed() -> float:
    import torch

    one = torch.tensor(1.0, dtype=torch.bfloat16)
    return max(2.0**-k for k in range(1, 30) if (one + torch.tensor(2.0**-k, dtype=torch.bfloat16)).item() == 1.0)


def _scale_after_overflows() -> float:
    """torch.amp.GradScaler with defaults: 3 overflowing steps, then 2000 clean ones."""
    import torch

    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.0)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.tensor(1.0))
    for step in range(3 + 2000):
        w.grad = torch.tensor([float("inf") if step < 3 else 1.0])
        scaler.step(opt)
        scaler.update()
    return scaler.get_scale()


EXERCISES: dict[str, Exercise] = {
    "00.fp16_max": Exercise("largest finite fp16 value", _fp16_max, 0.0,
                            "the largest exponent field that is not all ones is 30: 2^(30-15) x (2 - 2^-10)"),
    "00.tf32_eps": Exercise("machine epsilon of tf32", _tf32_eps, 0.0,
                            "epsilon is 2^-(mantissa bits); tf32 keeps fp16's mantissa"),
    "00.llama2_13b_params": Exercise("parameters of Llama-2-13B", _llama2_13b_params, 0.0,
                                     "per layer: 4 h^2 (attention) + 3 h i (MLP) + 2 h (norms); plus 2 V h + h"),
    "00.llama3_8b_bf16_gb": Exercise("size in GB (1e9 bytes) of Llama-3-8B's weights in bf16",
                                     _llama3_8b_bf16_gb, 0.01, "2 bytes per parameter; count on `meta`"),
    "02.e4m3_max": Exercise("largest finite fp8 e4m3fn value", _e4m3_max, 0.0,
                            "e4m3fn has no inf: only exponent 1111 with mantissa 111 is NaN, so the top "
                            "exponent field (15, bias 7) still holds numbers -- all but the all-ones mantissa"),
    "02.fp16_min_subnormal": Exercise("smallest positive fp16 value", _fp16_min_subnormal, 0.0,
                                      "exponent field 0, mantissa 0...01: 2^(1 - bias - mantissa bits)"),
    "02.bf16_swallowed": Exercise("largest power of two d with bf16(1 + d) == 1", _bf16_swallowed, 0.0,
                                  "bf16's gap after 1.0 is 2^-7; a tie at half the gap rounds to even (1.0)"),
    "02.scale_after_overflows": Exercise("GradScaler defaults: the scale after 3 overflowing steps then 2000 "
                                         "clean steps", _scale_after_overflows, 0.0,
                                         "each overflow halves 2^16; every 2000 consecutive clean steps double it"),
}


def check(name: str, answer) -> bool:
    """Print whether ``answer`` is right (within the exercise's tolerance) and return it."""
    if name not in EXERCISES:
        raise LabkitError(f"unknown exercise {name!r}; known: {', '.join(EXERCISES)}")
    ex = EXERCISES[name]
    if answer is None:
        print(f"[ ] {name}: not answered yet -- {ex.question}")
        return False
    value = _as_number(name, answer)   # before computing the expected value: a typo fails fast
    expected = ex.expected()
    ok = math.isclose(value, expected, rel_tol=ex.rel_tol, abs_tol=0.0)
    if ok:
        print(f"[x] {name}: correct ({_show(value)})")
    else:
        print(f"[ ] {name}: not yet ({_show(value)}). Hint: {ex.hint}")
    return ok


def _as_number(name: str, answer) -> float:
    """The learner's answer as a float: an int, float, numeric string ("65504", "6.5e4", "65,504"),
    or a one-element tensor / array. Anything else (True, a list, "2^15", a complex) is a LabkitError."""
    shown = " ".join(repr(answer).split())             # one line, even for a matrix
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    why = "a number"
    value = None
    if isinstance(answer, bool):   # float(True) == 1.0: almost certainly a comparison typed by mistake
        why = "a number, not a bool (did you type a comparison?)"
    elif isinstance(answer, str):
        text = answer.strip().replace(",", "").replace("_", "")
        try:
            value = float(text)
        except ValueError:
            why = "a number (a string must hold a plain number, e.g. '65504' or '6.1e-05'; compute 2**-14 in Python)"
        if value is not None and math.isinf(value) and "inf" not in text.lower():
            value, why = None, "a number that fits in a float (this one overflows to inf)"
    else:
        numel = getattr(answer, "numel", None) or getattr(answer, "size", None)
        numel = numel() if callable(numel) else numel
        if isinstance(numel, int) and numel != 1:
            why = f"one number, not {numel} values"
        else:
            try:
                value = float(answer.item() if hasattr(answer, "item") else answer)
            except (TypeError, ValueError, OverflowError, RuntimeError):
                value = None
    if value is None:
        raise LabkitError(f"{name}: the answer must be {why}, got {shown} ({type(answer).__name__})")
    return value


def _show(value: float) -> str:
    """An answer as the learner would read it: integers in full (13015864320), others with %g."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}"


# ---------------------------------------------------------------------------
# Lab 03: gradient checkpointing
# ---------------------------------------------------------------------------
def _saved_bytes_8_layers_every4() -> float:
    import torch

    from . import checkpointing, memory, models

    cfg = models.config("lab-tiny", num_hidden_layers=8)
    model = models.build(cfg, device="cpu", seed=0).train()
    ids = torch.randint(0, cfg.vocab_size, (2, 128), generator=torch.Generator().manual_seed(0))
    checkpointing.apply_checkpointing(model, every=4)
    return float(memory.saved_activation_bytes(model, ids, use_cache=False))


def _recompute_flops_fraction_1b() -> float:
    from . import models

    model = models.build("llama-3.2-1b", device="meta")
    layers = sum(p.numel() for p in model.model.layers.parameters())
    head = model.config.vocab_size * model.config.hidden_size
    return layers / (3 * (layers + head))      # one extra forward of the layers over (forward + 2 x forward)


def _checkpointing_saves_7b_gb() -> float:
    from . import memory

    plain, ckpt = (memory.estimate("llama-2-7b", batch_size=1, seq_len=4096, precision="bf16-mixed",
                                   gradient_checkpointing=gc) for gc in (False, True))
    return (plain.activations - ckpt.activations) / 1e9


EXERCISES.update({
    "03.saved_bytes_8_layers_every4": Exercise(
        "bytes saved by the 8-layer lab-tiny-shaped model, batch 2 x 128, with every=4", _saved_bytes_8_layers_every4,
        0.01, "from the 4-layer table: A - B = (none - every=1) / 4 per checkpointed layer; outside the layers = "
              "none - 4 A; then 8 layers with 2 checkpointed keep outside + 6 A + 2 B"),
    "03.recompute_flops_fraction_1b": Exercise(
        "extra matmul FLOPs from checkpointing every layer of Llama-3.2-1B, as a fraction of forward + backward",
        _recompute_flops_fraction_1b, 0.02,
        "count parameters on `meta`: layers L, head V x h; the step costs 3 x (L + head), the recompute adds L"),
    "03.checkpointing_saves_7b_gb": Exercise(
        "GB of activations removed by checkpointing, Llama-2-7B, batch 1 x 4096, bf16-mixed (estimator)",
        _checkpointing_saves_7b_gb, 0.01, "memory.estimate(..., gradient_checkpointing=False) minus =True, activations"),
    "03.grad_accum_steps": Exercise(
        "grad_accum for an effective batch of 48 with micro-batches of 3 on 2 data-parallel GPUs",
        lambda: 48 / (3 * 2), 0.0, "effective batch = micro-batch x grad_accum x number of GPUs"),
})


# ----------------------------------------------------------------------- lab 05: quantization and QLoRA
def _int8_absmax_max_error() -> float:
    return 2.54 / (2 * 127)        # half a step; a step is absmax / 127


def _nf4_level_14() -> float:
    import bitsandbytes.functional as bnbf

    return float(bnbf.get_4bit_type("nf4", device="cpu")[14])


def _nf4_dq_bits_blocksize_128() -> float:
    return 4 + 8 / 128 + 32 / (128 * 256)


def _llama2_7b_nf4_gb() -> float:
    import torch

    from . import models

    model = models.build("llama-2-7b", device="meta")
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    rest = models.count_params(model) - linear
    return (linear // 2 + 4 * (linear // 64) + 2 * rest) / 1e9


EXERCISES.update({
    "05.int8_absmax_max_error": Exercise(
        "largest rounding error of per-tensor absmax int8 on a tensor whose largest magnitude is 2.54",
        _int8_absmax_max_error, 1e-9, "one int8 step is absmax / 127; rounding is off by at most half a step"),
    "05.nf4_level_14": Exercise(
        "the second-largest NF4 level (index 14), from the normal quantiles", _nf4_level_14, 1e-6,
        "Phi^-1 at the second of linspace(0.9677083, 0.5, 9), divided by Phi^-1(0.9677083)"),
    "05.nf4_dq_bits_blocksize_128": Exercise(
        "bits per parameter of NF4 with blocks of 128 and double-quantized absmax (8-bit, blocks of 256)",
        _nf4_dq_bits_blocksize_128, 1e-9, "4 bits of code + 8 bits per block + 32 bits per 256 blocks"),
    "05.llama2_7b_nf4_gb": Exercise(
        "GB (1e9 bytes) of Llama-2-7B with its decoder linear layers in NF4 (blocks of 64, fp32 absmax, no double "
        "quantization) and everything else in bf16", _llama2_7b_nf4_gb, 0.001,
        "count the decoder nn.Linear weights on `meta`: 0.5 byte + 4 bytes / 64 each; the rest 2 bytes each"),
})


# ----------------------------------------------------------------------- lab 04: LoRA from scratch
def _lora_trainable(name: str, r: int, targets) -> int:
    from . import lora, models

    model = lora.inject_lora(models.build(name, device="meta"), r=r, alpha=2 * r, target_modules=targets)
    return models.count_params(model, trainable_only=True)


def _zero_init_grad_sum() -> float:
    import torch

    from . import lora

    layer = lora.LoRALinear(torch.nn.Linear(8, 4), r=2, alpha=4)
    with torch.no_grad():
        layer.lora_A.zero_()
    layer(torch.randn(3, 8)).square().sum().backward()
    return float(layer.lora_A.grad.abs().sum() + layer.lora_B.grad.abs().sum())


EXERCISES.update({
    "04.llama2_7b_qv_r16_params": Exercise(
        "trainable parameters of LoRA r=16 on q_proj and v_proj of Llama-2-7B",
        lambda: float(_lora_trainable("llama-2-7b", 16, ("q_proj", "v_proj"))), 0.0,
        "per layer and matrix r x (d_in + d_out); 32 layers, q and v are 4096 -> 4096"),
    "04.llama3_8b_all_linear_r8_params": Exercise(
        "trainable parameters of LoRA r=8 on every linear layer of Llama-3-8B's blocks",
        lambda: float(_lora_trainable("llama-3-8b", 8, "all-linear")), 0.0,
        "r x (d_in + d_out) for q, k, v, o, gate, up, down; k and v are 4096 -> 1024, the MLP 4096 <-> 14336; "
        "the LM head is not adapted"),
    "04.adamw_bytes_llama2_7b_qv_r16": Exercise(
        "bytes of AdamW state (two fp32 moments) for LoRA r=16 on q,v of Llama-2-7B",
        lambda: 8.0 * _lora_trainable("llama-2-7b", 16, ("q_proj", "v_proj")), 0.0,
        "exp_avg and exp_avg_sq: 2 x 4 bytes per trainable parameter"),
    "04.qwen25_7b_qv_r8_bf16_mb": Exercise(
        "MB (1e6 bytes) of the tensors of a bf16 LoRA r=8 adapter on q,v of Qwen2.5-7B",
        lambda: 2 * _lora_trainable("qwen2.5-7b", 8, ("q_proj", "v_proj")) / 1e6, 0.01,
        "28 layers x r x ((3584 + 3584) + (3584 + 512)) parameters, 2 bytes each"),
    "04.zero_init_grad_sum": Exercise(
        "sum of |grad A| + |grad B| after one backward pass when both A and B start at zero",
        _zero_init_grad_sum, 0.0, "dL/dB needs A x, dL/dA needs B: with both zero, both are zero"),
})


# ---------------------------------------------------------------------------
# Lab 01: memory estimation
# ---------------------------------------------------------------------------
def _lab_small_bytes_per_token_layer() -> float:
    """Measured, not from a formula: saved bytes of a 2-layer minus a 1-layer lab-small, per token."""
    import torch

    from . import memory, models

    def saved(layers):
        cfg = models.config("lab-small", num_hidden_layers=layers)
        model = models.build(cfg, device="cpu", seed=0).train()
        return memory.saved_activation_bytes(model, torch.zeros(2, 16, dtype=torch.long))

    return (saved(2) - saved(1)) / (2 * 16)


def _llama2_13b_states_gb() -> float:
    from . import memory

    e = memory.estimate("llama-2-13b", batch_size=1, seq_len=1, precision="bf16-mixed")
    return (e.weights + e.gradients + e.optimizer) / 1e9


def _llama3_8b_kv_bytes() -> float:
    from . import memory, models

    return float(memory.kv_cache_bytes(models.config("llama-3-8b"), batch_size=8, seq_len=8192, dtype="bf16"))


EXERCISES.update({
    "01.lab_small_bytes_per_token_layer": Exercise(
        "bytes of activations saved per token per decoder layer of lab-small (fp32, sdpa)",
        _lab_small_bytes_per_token_layer, 0.0, "4 x (8h + 2kd + a + 2 + 4i) with h=512, i=1536, a=k=8, d=64"),
    "01.llama2_13b_states_gb": Exercise(
        "weights + gradients + AdamW states of Llama-2-13B in bf16-mixed, in GB (1e9 bytes)",
        _llama2_13b_states_gb, 0.001, "16 bytes per parameter; count the parameters on `meta`"),
    "01.llama3_8b_kv_bytes": Exercise(
        "KV cache of Llama-3-8B, batch 8 x 8192 tokens, bf16, in bytes",
        _llama3_8b_kv_bytes, 0.0, "2 (K and V) x 32 layers x batch x seq x 8 KV heads x 128 x 2 bytes"),
})


# ----------------------------------------------------------------------- lab 09: SFT data
def _dialogue_mask_sum(index: int, last_only: bool) -> float:
    """From the tokenizer's own {% generation %} mask (independent of labkit.sft.build_labels)."""
    from . import data
    from .tokenizer import load_tokenizer

    tok, d = load_tokenizer(), data.load("dialogues", "test")[index]
    if last_only:  # the final answer's tokens plus its <|end|>
        return float(len(tok(d["response"], add_special_tokens=False)["input_ids"]) + 1)
    msgs = [{"role": r, "content": c} for u, a in d["history"] for r, c in (("user", u), ("assistant", a))]
    msgs += [{"role": "user", "content": d["prompt"]}, {"role": "assistant", "content": d["response"]}]
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return float(sum(enc["assistant_masks"]))


def _padding_fraction_64() -> float:
    from . import data
    from .tokenizer import load_tokenizer

    tok = load_tokenizer()
    lengths = [len(tok.apply_chat_template([{"role": "user", "content": x["prompt"]},
                                            {"role": "assistant", "content": x["response"]}],
                                           tokenize=True, return_dict=True)["input_ids"])
               for x in data.load("instructions", "test")[:64]]
    batches = [lengths[i:i + 16] for i in range(0, 64, 16)]
    slots = sum(16 * max(b) for b in batches)
    return (slots - sum(lengths)) / slots


def _jaccard_3gram() -> float:
    def grams(s):
        w = s.split()
        return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}
    a = grams("the old miller of cadwell sold bread at the market every morning")
    b = grams("the old miller of cadwell sold cakes at the market every evening")
    return len(a & b) / len(a | b)


EXERCISES.update({
    "09.loss_tokens_dialogue8": Exercise(
        "tokens that carry loss in test dialogue 8 (data.load('dialogues', 'test')[8], four turns), "
        "every assistant turn trained",
        lambda: _dialogue_mask_sum(8, False), 0.0,
        "each assistant turn's content tokens plus its <|end|>; not the '<|assistant|>' header or newlines"),
    "09.loss_tokens_dialogue8_last": Exercise(
        "the same dialogue with last_turn_only=True", lambda: _dialogue_mask_sum(8, True), 0.0,
        "the tokens of the final response, plus one for <|end|>"),
    "09.padding_fraction_64": Exercise(
        "fraction of padding slots when the first 64 test instructions (chat template) are batched 16 at a "
        "time, in order, each batch padded to its longest row", _padding_fraction_64, 1e-6,
        "slots = sum over batches of 16 x longest; padding = slots - real tokens"),
    "09.jaccard_3gram": Exercise(
        "exact Jaccard of the word-3-gram sets of 'the old miller of cadwell sold bread at the market every "
        "morning' and '... sold cakes at the market every evening'", _jaccard_3gram, 1e-9,
        "10 trigrams each; a changed word spoils every trigram that contains it"),
    "09.lsh_candidate_prob": Exercise(
        "probability that two texts with Jaccard 0.5 become MinHash-LSH candidates with 16 bands of 4 rows",
        lambda: 1 - (1 - 0.5 ** 4) ** 16, 1e-9, "a band matches with probability J^r; candidates if any band matches"),
})


# ---------------------------------------------------------------------------
# Lab 08: chain-of-thought prompting
# ---------------------------------------------------------------------------
def _wilson_low_30_of_50() -> float:
    """Invert the score test by bisection (independent of the closed form in labkit.prompting)."""
    c, n, z = 30, 50, 1.96
    lo, hi = 0.0, c / n
    for _ in range(100):
        m = (lo + hi) / 2
        if abs(c / n - m) > z * math.sqrt(m * (1 - m) / n):
            lo = m
        else:
            hi = m
    return (lo + hi) / 2


def _apples_cot_prompt_tokens() -> float:
    from . import data
    from .tokenizer import load_tokenizer

    tok = load_tokenizer()
    text = f"Q: {data.APPLES_PROBLEM['question']}\nA: Let's think step by step."
    return float(len(tok(tok.bos_token + text, add_special_tokens=False)["input_ids"]))


def _max_shots_in_context() -> float:
    from . import data, prompting
    from .tokenizer import load_tokenizer

    tok = load_tokenizer()
    best = 0
    for k in range(0, 9):
        n = len(tok(tok.bos_token + prompting.few_shot_cot(data.APPLES_PROBLEM["question"], k),
                    add_special_tokens=False)["input_ids"])
        if n + 128 <= 512:
            best = k
    return float(best)


EXERCISES.update({
    "08.wilson_low_30_of_50": Exercise(
        "lower bound of the 95% Wilson interval for 30 correct of 50", _wilson_low_30_of_50, 1e-3,
        "(p + z^2/2n - z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) with p = 0.6, n = 50, z = 1.96"),
    "08.apples_cot_prompt_tokens": Exercise(
        "tokens of the zero-shot-CoT stage-1 prompt for the apples problem, with <|bos|>",
        _apples_cot_prompt_tokens, 0.0, "tok(tok.bos_token + prompting.zero_shot_cot(q), add_special_tokens=False)"),
    "08.max_shots_in_context": Exercise(
        "largest k with few_shot_cot(apples, k) + 128 new tokens <= 512 positions", _max_shots_in_context, 0.0,
        "count the tokens of few_shot_cot(q, k) for k = 0, 1, 2, ... (exemplars have different lengths)"),
})


# ---------------------------------------------------------------------------
# Lab 07: data parallelism to FSDP (hand formulas, independent of labkit.dist)
# ---------------------------------------------------------------------------
def _llama2_7b_params() -> float:
    from . import models

    return float(models.count_params(models.build("llama-2-7b", device="meta")))


EXERCISES.update({
    "07.zero3_gb_70b_64gpus": Exercise(
        "GB (1e9 bytes) of model states per GPU for a 70e9-parameter model, ZeRO-3, 64 GPUs, mixed-precision Adam",
        lambda: 16 * 70e9 / 64 / 1e9, 0.001, "(2 + 2 + 12) bytes per parameter, all of it divided by N"),
    "07.zero2_gb_llama2_7b_8gpus": Exercise(
        "GB per GPU of model states for Llama-2-7B under ZeRO-2 on 8 GPUs (K = 12)",
        lambda: (2 * _llama2_7b_params() + 14 * _llama2_7b_params() / 8) / 1e9, 0.001,
        "stage 2 keeps the bf16 weights whole (2 bytes) and shards gradients + optimizer (2 + 12 bytes)"),
    "07.ring_allreduce_sent_gb": Exercise(
        "GB each of 8 GPUs sends in a ring all-reduce of a 1 GB gradient buffer",
        lambda: 2 * 7 / 8 * 1.0, 0.001, "reduce-scatter then all-gather: each sends (N-1)/N of the buffer twice"),
    "07.zero3_seconds_llama2_7b_ib400": Exercise(
        "seconds of ZeRO-3 communication per step for Llama-2-7B in bf16 on 400 Gbit/s InfiniBand (no overlap)",
        lambda: 3 * _llama2_7b_params() * 2 * 8 / 400e9, 0.01, "3 x params x 2 bytes x 8 bits / 400e9 bit/s"),
    "07.bubble_p8_m32": Exercise(
        "idle (bubble) fraction of an 8-stage pipeline with 32 micro-batches",
        lambda: 7 / 39, 0.001, "(p - 1) / (m + p - 1)"),
})


# ----------------------------------------------------------------------- lab 06: catastrophic forgetting
def _mix_general_docs(g: int, d: int) -> float:
    from . import data

    return float(round(len(data.load("domain", "train")) * g / d))  # general documents per domain document


def _mix_token_share(g: int, d: int) -> float:
    from . import data
    from .tokenizer import load_tokenizer

    tok = load_tokenizer()
    domain = data.load("domain", "train")
    general = data.load("general", "train")[: round(len(domain) * g / d)]
    count = lambda docs: sum(len(ids) + 2 for ids in tok(docs, add_special_tokens=False)["input_ids"])  # + bos, eos
    return count(general) / (count(general) + count(domain))


def _ewc_penalty_by_hand() -> float:
    import torch

    f, delta, lam = torch.tensor([0.5, 2.0, 0.0]), torch.tensor([0.2, -0.1, 3.0]), 100.0
    return float(lam / 2 * (f * delta**2).sum())


def _fisher_by_hand() -> float:
    import torch

    w = torch.tensor(1.0, requires_grad=True)
    grads = [torch.autograd.grad((w * x - y) ** 2, w)[0] for x, y in ((1.0, 0.0), (2.0, 1.0))]
    return float(sum(g**2 for g in grads) / len(grads))


EXERCISES.update({
    "06.mix_general_docs_1_4": Exercise(
        "general documents that mix() adds to the committed domain training corpus at general:domain 1:4",
        lambda: _mix_general_docs(1, 4), 0.0, "round(ratio x number of domain documents); ratio = 1/4"),
    "06.ewc_penalty_by_hand": Exercise(
        "EWC penalty for F = (0.5, 2, 0), theta - theta* = (0.2, -0.1, 3), lambda = 100",
        _ewc_penalty_by_hand, 1e-9, "lambda/2 x sum F_i (theta_i - theta*_i)^2; a weight with F = 0 costs nothing"),
    "06.fisher_by_hand": Exercise(
        "diagonal Fisher of w for (w x - y)^2 at w = 1 over the samples (1, 0) and (2, 1)",
        _fisher_by_hand, 1e-9, "per-sample gradient 2 (w x - y) x; square each, then average"),
    "06.mix_token_share_1_3": Exercise(
        "fraction of tokens that are general in the 1:3 general:domain mix of the committed corpora",
        lambda: _mix_token_share(1, 3), 0.01,
        "tokenize both parts (each document adds <bos> and <eos>); general stories are longer than log entries"),
})
