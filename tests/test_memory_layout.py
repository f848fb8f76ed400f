"""labkit.memory as a package split by role (issue 24): every name of the old module still
reachable from ``labkit.memory``, each public name from its role module, the layer model behind a
context object (the 13-argument form still equal to it), the KV-cache switch still set on the
package, and ``labkit.bench.memory`` with its row tables in a sibling module."""
import inspect

import pytest

from labkit import memory
from labkit.bench import memory as bench
from labkit.bench import memory_rows
from labkit.memory import arch, bill, cli, constants, measure, ops, replay, states, step

# Every top-level name of labkit/memory.py before the split (its stdlib imports aside).
OLD_NAMES = [
    "torch", "LabkitError", "PRECISIONS", "autocast", "GB", "MiB", "OPTIMIZERS", "QUANTIZATIONS", "ATTENTIONS",
    "DEVICES", "DEFAULT_LORA_TARGETS", "LINEAR_NAMES", "BYTES", "NF4_BLOCKSIZE", "ADAM8BIT_BLOCKSIZE",
    "ADAM8BIT_MIN_SIZE", "CUDA_CONTEXT_BYTES", "CUBLAS_WORKSPACE_BYTES", "MemoryEstimate", "_Arch", "FAMILIES",
    "_arch", "_supported_names", "supported_models", "_Setup", "_lora_tensors", "_weight_bytes",
    "_trainable_tensors", "_optimizer_bytes", "_optimizer_scratch", "_T", "_Op", "_promote", "_Tape",
    "_saved_storages", "_external", "_forward_peak", "_Backward", "_Linear", "_matmul", "_linear", "_rmsnorm",
    "_rope", "sdpa_kernel", "_sdpa_backward_scratch", "_attention", "_llama_layer", "CACHE_VALUES_FOLLOW_KEYS",
    "_cache_values_follow_keys", "_ask_transformers_cache", "_layer_weights", "_record_step", "_StepMemory",
    "_simulate", "_check", "estimate", "_context_warning", "_check_lora_rank", "_peak", "kv_cache_bytes",
    "_storage_key", "saved_activation_bytes", "_cdata", "LiveTensors", "live_peak_bytes", "make_optimizer",
    "training_step", "_as_batch", "cuda_context_bytes", "measure_training_step", "main"]
OLD_NAMES.remove("torch")   # a module the old file imported, not one of its names

ROLES = {constants: ["GB", "BYTES", "NF4_BLOCKSIZE", "CUDA_CONTEXT_BYTES", "CUBLAS_WORKSPACE_BYTES"],
         arch: ["Architecture", "architecture", "FAMILIES", "supported_models"],
         bill: ["MemoryEstimate", "estimate", "kv_cache_bytes"],
         ops: ["LayerContext", "llama_layer_ops", "sdpa_kernel", "cache_values_follow_keys"],
         measure: ["saved_activation_bytes", "LiveTensors", "live_peak_bytes", "make_optimizer", "training_step",
                   "cuda_context_bytes", "measure_training_step"],
         cli: ["main"]}


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_name_of_the_old_module_is_importable(name):
    assert hasattr(memory, name), name


def test_public_names_come_from_their_role_module():
    for module, names in ROLES.items():
        assert set(names) <= set(module.__all__), module.__name__
        for name in module.__all__:
            assert getattr(memory, name) is getattr(module, name), name
    assert set(memory.__all__) >= {n for m in ROLES for n in m.__all__}
    assert replay.__all__ == [] and states.__all__ == [] and step.__all__ == []   # internals only
    assert inspect.isfunction(memory.estimate)                                     # the function, not the module
    assert memory._arch is memory.architecture and memory._Arch is memory.Architecture
    assert memory._cache_values_follow_keys is memory.cache_values_follow_keys


def test_no_module_of_the_package_is_over_450_lines():
    for module in (memory, constants, arch, bill, ops, measure, cli, replay, states, step, bench, memory_rows):
        assert len(inspect.getsource(module).splitlines()) <= 450, module.__name__


def _layer_tape(call):
    """Record one middle layer of a small GQA model under bf16-mixed with LoRA; return the tape."""
    a = memory.architecture("lab-tiny")
    setup = memory._Setup("bf16-mixed", "adamw", 8, ("q_proj", "v_proj"), None)
    tape = memory._Tape(setup.autocast)
    x = memory._T(2 * 16 * a.hidden, setup.param_dtype, True)
    cos = memory._T(16 * a.head_dim, setup.param_dtype, False)
    sin = memory._T(16 * a.head_dim, setup.param_dtype, False)
    call(tape, x, memory._layer_weights(tape, a, setup), a, setup, cos, sin)
    return tape


@pytest.mark.parametrize("attn,cache", [("sdpa", True), ("eager", False)])
def test_layer_context_form_equals_the_thirteen_argument_form(attn, cache):
    def new(tape, x, w, a, setup, cos, sin):
        ctx = memory.LayerContext(tape, a, setup, 2, 16, attn, "cuda", cos, sin, cache=cache)
        return memory.llama_layer_ops(ctx, x, w)

    def old(tape, x, w, a, setup, cos, sin):
        return memory._llama_layer(tape, x, w, a, setup, 2, 16, attn, "cuda", cos, sin, cache)

    t_new, t_old = _layer_tape(new), _layer_tape(old)
    shape = [(op.name, op.out.numel, op.out.dtype, [s.nbytes for s in op.saved], op.scratch) for op in t_new.ops]
    assert shape == [(op.name, op.out.numel, op.out.dtype, [s.nbytes for s in op.saved], op.scratch)
                     for op in t_old.ops]
    assert len(t_new.keep) == (2 if cache else 0)
    assert len(inspect.signature(memory.llama_layer_ops).parameters) == 3


def test_cache_switch_is_still_set_on_the_package():
    setup = memory._Setup("bf16-mixed", "adamw", None, (), None)

    def kv_cache_bytes_kept():
        tape, _ = memory._record_step(memory.architecture("lab-tiny"), setup, 2, 16, "sdpa", False, None)
        return sum(t.nbytes for t in tape.keep)

    try:
        memory.CACHE_VALUES_FOLLOW_KEYS = True
        assert memory.cache_values_follow_keys() is True
        forced = kv_cache_bytes_kept()
        memory.CACHE_VALUES_FOLLOW_KEYS = False
        assert memory.cache_values_follow_keys() is False
        unforced = kv_cache_bytes_kept()
    finally:
        memory.CACHE_VALUES_FOLLOW_KEYS = None
    assert forced > unforced                 # fp32 copies of the cached values instead of bf16


def test_bench_memory_still_has_its_rows():
    for name in ("TARGETS", "row", "FULL_ROWS", "QUICK_ROWS", "CALIBRATION", "_spec_from_csv"):
        assert getattr(bench, name) is getattr(memory_rows, name), name
    assert len(bench.FULL_ROWS) == 31 and bench.row("lab-tiny", 1, 8)["model"] == "lab-tiny"
