"""Number formats and loss scaling, from scratch (lab 02, and lab 00 §2).

**Formats.** A binary float stores a sign bit, ``E`` exponent bits and ``M``
mantissa bits; its value is ``(-1)^s * 2^(e - bias) * 1.m`` (normal) or
``(-1)^s * 2^(1 - bias) * 0.m`` when the exponent field is 0 (subnormal), with
``bias = 2^(E-1) - 1``. Everything else -- range, smallest normal and
subnormal, machine epsilon, the gap between neighbours -- follows from ``E``
and ``M``. `FloatFormat` computes those numbers, rounds real numbers to the
format (round to nearest, ties to even), and encodes/decodes bit patterns;
`tests/test_precision.py` checks all of it against ``torch.finfo`` and
PyTorch's own casts, bit for bit.

Two ways to spend the all-ones exponent field:

* **IEEE style** (fp32, tf32, bf16, fp16, fp8 e5m2): it means inf (mantissa 0)
  or NaN (anything else), so the largest finite number uses exponent field
  ``2^E - 2``;
* **"fn" style** (fp8 e4m3fn: *f*inite, *n*aN only): there is no inf, and only
  the all-ones *mantissa* of the top exponent is NaN, so the top exponent
  carries numbers too: max = ``2^8 * 1.75 = 448`` instead of 240. Overflow
  either saturates to 448 or gives NaN (the OCP fp8 spec allows both); PyTorch
  2.13's cast saturates (even inf becomes 448), older versions give NaN.

**Loss scaling.** fp16's smallest subnormal is 2^-24 (about 6e-8): smaller
gradient values flush to zero. `DynamicLossScaler` multiplies the loss by a
large scale ``S`` before backward (so every gradient is ``S`` times larger and
clears the underflow zone), divides the gradients by ``S`` before the optimizer
step, skips the step when a gradient overflowed to inf/NaN, and adapts ``S``:
halve it after an overflow, double it after ``growth_interval`` clean steps.
It makes exactly the decisions `torch.amp.GradScaler` makes.

One module per role, every name re-exported here, so ``from labkit import precision;
precision.FORMATS["bf16"]`` reads the same as before the split:

* `formats` -- `FloatFormat`, `FORMATS`, `cast_report` (lab 00 §2, lab 02 §2-3);
* `loss_scaling` -- `update_scale`, `DynamicLossScaler`, `ScalerStateError` (lab 02 §5-7);
* `fp16_emulation` -- `emulate_fp16_autocast` (lab 02 §7);
* `bf16_training` -- `stochastic_round_bf16`, `Bf16AdamW` (lab 02 §8).
"""
from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from .bf16_training import Bf16AdamW, stochastic_round_bf16
from .formats import FORMATS, FloatFormat, cast_report
from .fp16_emulation import _Fp16Linear, emulate_fp16_autocast
from .loss_scaling import (_READY, _STEPPED, _UNSCALED, DynamicLossScaler, ScalerStateError, _check_factors, _fp32,
                           update_scale)

__all__ = [  # number formats (formats.py)
           "FloatFormat", "FORMATS", "cast_report",
           # dynamic loss scaling (loss_scaling.py)
           "update_scale", "ScalerStateError", "DynamicLossScaler",
           # fp16 emulated on a CPU (fp16_emulation.py), pure bf16 training (bf16_training.py)
           "emulate_fp16_autocast", "stochastic_round_bf16", "Bf16AdamW"]
