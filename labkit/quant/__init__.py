"""Quantization from scratch: absmax int8, LLM.int8(), NF4, double quantization, a 4-bit linear layer.

Lab 05 builds each piece in the notebook and checks it against this module and
against `bitsandbytes`:

* **absmax int8** -- ``q = round(127 * x / absmax(x))``, one scale per tensor
  or one per row ("vector-wise");
* **LLM.int8()** -- vector-wise int8 matmul, except that the input columns
  holding a value of magnitude >= 6.0 (the "outlier features") are multiplied
  in 16-bit (Dettmers et al. 2022);
* **NF4** -- 16 levels at quantiles of a normal distribution, one fp32 absmax
  per block of 64 weights, two 4-bit codes per byte (Dettmers et al. 2023);
  bit-identical to ``bitsandbytes.functional.quantize_4bit(..., quant_type="nf4")``;
* **FP4** -- bitsandbytes' other 4-bit type (``quant_type="fp4"``): a sign bit and 3 bits
  of a tiny float, its 7 magnitudes E2M1-like values divided by 6; same blocks and packing,
  bit-identical too;
* **double quantization** -- the fp32 absmax constants themselves quantized to
  8 bits in blocks of 256 (bitsandbytes' ``compress_statistics=True``):
  4.5 -> ~4.127 bits per parameter;
* **Linear4bit** -- a frozen linear layer that stores the packed NF4 codes and
  dequantizes them to the compute dtype in every forward *and* backward, so
  no 16-bit copy of the weight is ever kept (QLoRA's base model);
* **quantize_model** -- swap a model's linear layers for labkit's or
  bitsandbytes' 4-bit layer;
* **merge_lora_4bit** -- fold LoRA adapters into a 4-bit base: dequantize,
  add ``s * B @ A`` in fp32, requantize (or keep the merged weight dense).

One deliberate difference from bitsandbytes: a NaN or inf in a tensor to
quantize is an error here. bitsandbytes propagates it without a word -- the
absmax of its block (row, tensor) becomes NaN/inf, so every value sharing that
scale comes back NaN -- while labkit names how many values, where, and asks
for the tensor to be cleaned or clipped first.

One module per role, every name re-exported here, so ``from labkit import quant; quant.nf4_quantize(w)``
reads the same as before the split:

* `checks` -- the float and NaN/inf checks every quantizer shares;
* `int8` -- absmax int8 and LLM.int8()'s outlier decomposition (lab 05 §2-3);
* `fourbit` -- the NF4 and FP4 code books, blockwise absmax and packing; `NF4_BLOCKSIZE` (lab 05 §4);
* `double` -- the 8-bit dynamic code, double quantization and the bits/bytes per weight (lab 05 §5);
* `linear` -- `Linear4bit`, `quantize_model`, `merge_lora_4bit`, `cast_frozen` (lab 05 §6-9);
* `size` -- `model_nbytes` and `weight_bytes` (lab 05 §7, lab 00 §5).
"""
from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from .checks import FLOAT_DTYPES, _check_finite, _check_float, _listed
from .double import (DQ_BLOCKSIZE, DYNAMIC_MAP, DoubleQuant, bits_per_param, blockwise_dequantize, blockwise_quantize,
                     double_dequantize, double_quantize, dynamic_map, nf4_nbytes)
from .fourbit import (FP4_LEVELS, NF4_BLOCKSIZE, NF4_LEVELS, NF4_OFFSET, QUANT_STORAGE, QUANT_TYPES, _PAIRS, _byte_pairs,
                      _check_blocks, _check_storage, _n_blocks, dequantize_4bit, fp4_dequantize, fp4_levels, fp4_quantize,
                      levels_4bit, nf4_dequantize, nf4_quantize, normal_float_levels, pack_4bit, quantize_4bit,
                      unpack_4bit)
from .int8 import INT8_MAX, LLM_INT8_THRESHOLD, absmax_dequantize, absmax_quantize, int8_matmul, llm_int8_matmul, outlier_columns
from .linear import (BACKENDS, Linear4bit, QuantizedWeightError, _bnb_linear4bit, _NF4Linear, cast_frozen,
                     dequantized_weight, merge_lora_4bit, quantize_model)
from .size import WEIGHT_FORMATS, model_nbytes, weight_bytes

__all__ = [  # int8 (int8.py)
           "INT8_MAX", "LLM_INT8_THRESHOLD", "absmax_quantize", "absmax_dequantize", "int8_matmul",
           "outlier_columns", "llm_int8_matmul",
           # 4-bit types (fourbit.py)
           "NF4_BLOCKSIZE", "NF4_OFFSET", "NF4_LEVELS", "FP4_LEVELS", "QUANT_TYPES", "QUANT_STORAGE",
           "normal_float_levels", "fp4_levels", "levels_4bit", "pack_4bit", "unpack_4bit", "quantize_4bit",
           "dequantize_4bit", "nf4_quantize", "nf4_dequantize", "fp4_quantize", "fp4_dequantize",
           # double quantization (double.py)
           "DQ_BLOCKSIZE", "DYNAMIC_MAP", "dynamic_map", "blockwise_quantize", "blockwise_dequantize",
           "DoubleQuant", "double_quantize", "double_dequantize", "bits_per_param", "nf4_nbytes",
           # the 4-bit layer and the model (linear.py)
           "QuantizedWeightError", "Linear4bit", "BACKENDS", "quantize_model", "dequantized_weight",
           "merge_lora_4bit", "cast_frozen",
           # sizes (size.py), checks (checks.py)
           "model_nbytes", "WEIGHT_FORMATS", "weight_bytes", "FLOAT_DTYPES"]
