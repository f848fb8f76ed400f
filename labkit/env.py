"""Where am I running, and how big should the experiment be?

Every lab starts with `report()`: the device, what number formats it supports,
library versions, and -- on a known GPU -- its peak dense throughput from the
vendor's spec sheet, which later labs use to compute utilisation (MFU).

The *profile* picks experiment sizes without changing the code path:

* ``smoke`` -- CI and tests: every lab in about a minute on 2 CPU cores;
* ``cpu``   -- a learner on a laptop: minutes;
* ``full``  -- a GPU: the real experiment.

Set it with ``LABKIT_PROFILE``; the default is ``full`` on CUDA, ``cpu`` otherwise.

In the labs: the first cell of every lab (`report`, `profile`, `device`); `by_profile` sizes each
experiment; lab 12 reads the GPU's peak throughput (`gpu_spec`) and measures matmul throughput
(`matmul_tflops`).
"""
from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from importlib import metadata

import torch

from .errors import LabkitError

PROFILES = ("smoke", "cpu", "full")


# ---------------------------------------------------------------------------
# Device and number formats
# ---------------------------------------------------------------------------
def device() -> torch.device:
    """The best device here: CUDA, then Apple's MPS, then CPU.

    ``LABKIT_DEVICE=cpu`` forces a device (useful to compare CPU and GPU).
    """
    forced = os.environ.get("LABKIT_DEVICE")
    if forced:
        if forced.startswith("cuda") and not torch.cuda.is_available():
            raise LabkitError(f"LABKIT_DEVICE={forced} but no CUDA GPU is visible; unset it or use LABKIT_DEVICE=cpu")
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def has_cuda() -> bool:
    return torch.cuda.is_available()


def require_cuda(what: str) -> None:
    """Stop a GPU-only step with one line that says what to do instead."""
    if not torch.cuda.is_available():
        raise LabkitError(
            f"{what} needs an NVIDIA GPU and none is visible here; run it on a GPU machine "
            "(see README 'Running on a GPU') or use the committed results in data/results/"
        )


def supports_bf16(dev: torch.device | str | None = None) -> bool:
    """bf16 *compute* is native on Ampere (sm80) and newer; a T4 (sm75) lacks it.
    On CPU bf16 always works (fast with AVX512-BF16/AMX, emulated otherwise)."""
    dev = torch.device(dev) if dev is not None else device()
    if dev.type == "cuda":
        major, _ = torch.cuda.get_device_capability(dev)
        return major >= 8
    return dev.type in ("cpu", "mps")


def tf32_enabled() -> bool:
    """Whether fp32 matmuls may run on tensor cores as tf32 (19-bit) on this process."""
    return torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"


def autocast_dtype(dev: torch.device | str | None = None) -> torch.dtype:
    """bf16 where the hardware has it, fp16 otherwise (a T4 falls back to fp16 + loss scaling)."""
    return torch.bfloat16 if supports_bf16(dev) else torch.float16


# ---------------------------------------------------------------------------
# Profiles and seeding
# ---------------------------------------------------------------------------
def profile() -> str:
    """The run profile from ``LABKIT_PROFILE`` (default: ``full`` on CUDA, ``cpu`` otherwise)."""
    value = os.environ.get("LABKIT_PROFILE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        raise LabkitError(f"LABKIT_PROFILE={value!r} is not a profile; use one of {', '.join(PROFILES)}")
    return value


def check_profile(value: str | None) -> str:
    """Validate a profile given on a command line (None means the environment's)."""
    if value is None:
        return profile()
    if value not in PROFILES:
        raise LabkitError(f"unknown profile {value!r}; use one of {', '.join(PROFILES)}")
    return value


def by_profile(smoke, cpu, full, *, profile_name: str | None = None):
    """Pick a size by profile: ``steps = by_profile(smoke=20, cpu=300, full=3000)``."""
    return {"smoke": smoke, "cpu": cpu, "full": full}[check_profile(profile_name)]


def seed_everything(seed: int = 0) -> None:
    """Seed Python, torch (CPU and every GPU) so a rerun gives the same numbers."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional here
        pass


# ---------------------------------------------------------------------------
# Peak throughput of known GPUs (dense, no sparsity), from vendor spec sheets
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GPUSpec:
    name: str
    memory_gb: float
    fp32: float            # TFLOP/s on CUDA cores
    tf32: float | None     # TFLOP/s on tensor cores; None = no tf32
    bf16: float | None     # None = no bf16 tensor cores
    fp16: float
    int8: float            # TOPS
    source: str

    def peak(self, dtype: str) -> float | None:
        return getattr(self, dtype)


# Dense figures (the spec sheets' "with sparsity" numbers are 2x these).
# GeForce cards: tensor throughput with fp32 accumulate, which is what
# PyTorch's bf16/fp16 matmuls use.
GPU_SPECS: dict[str, GPUSpec] = {
    "T4": GPUSpec("Tesla T4", 16, 8.1, None, None, 65.0, 130.0, "NVIDIA T4 datasheet"),
    "A10G": GPUSpec("NVIDIA A10G", 24, 31.2, 35.0, 70.0, 70.0, 140.0, "NVIDIA A10G figures as published for AWS G5"),
    "L4": GPUSpec("NVIDIA L4", 24, 30.3, 60.0, 121.0, 121.0, 242.0, "NVIDIA L4 datasheet"),
    "A100-40GB": GPUSpec("NVIDIA A100 40GB", 40, 19.5, 156.0, 312.0, 312.0, 624.0, "NVIDIA A100 datasheet"),
    "A100-80GB": GPUSpec("NVIDIA A100 80GB", 80, 19.5, 156.0, 312.0, 312.0, 624.0, "NVIDIA A100 datasheet"),
    "H100-SXM": GPUSpec("NVIDIA H100 SXM", 80, 67.0, 494.7, 989.4, 989.4, 1978.9, "NVIDIA H100 datasheet (SXM5)"),
    "H100-PCIe": GPUSpec("NVIDIA H100 PCIe", 80, 51.2, 378.0, 756.0, 756.0, 1513.0, "NVIDIA H100 datasheet (PCIe)"),
    "H200": GPUSpec("NVIDIA H200", 141, 67.0, 494.7, 989.4, 989.4, 1978.9, "NVIDIA H200 datasheet (SXM)"),
    "RTX-3090": GPUSpec("NVIDIA GeForce RTX 3090", 24, 35.6, 35.6, 71.0, 71.0, 284.0, "NVIDIA Ampere GA102 whitepaper"),
    "RTX-4090": GPUSpec("NVIDIA GeForce RTX 4090", 24, 82.6, 82.6, 165.2, 165.2, 660.6, "NVIDIA Ada Lovelace whitepaper"),
}

# How torch.cuda.get_device_name() spells each card (checked in order).
_NAME_PATTERNS = [
    ("H200", "H200"), ("H100 PCIe", "H100-PCIe"), ("H100", "H100-SXM"),
    ("A100-SXM4-40GB", "A100-40GB"), ("A100-PCIE-40GB", "A100-40GB"), ("A100 40GB", "A100-40GB"),
    ("A100", "A100-80GB"), ("A10G", "A10G"), ("L4", "L4"), ("T4", "T4"),
    ("RTX 3090", "RTX-3090"), ("RTX 4090", "RTX-4090"),
]


def gpu_spec(name: str | None = None) -> GPUSpec | None:
    """Spec of a known GPU by key ("H100-SXM") or by the name CUDA reports; None if unknown."""
    if name is None:
        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name()
    if name in GPU_SPECS:
        return GPU_SPECS[name]
    for pattern, key in _NAME_PATTERNS:
        if pattern.lower() in name.lower():
            return GPU_SPECS[key]
    return None


# ---------------------------------------------------------------------------
# The hardware report every lab starts with
# ---------------------------------------------------------------------------
def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def info() -> dict:
    """Everything `report()` prints, as a dict (JSON-friendly)."""
    dev = device()
    out = {
        "device": str(dev),
        "profile": profile(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "accelerate": _version("accelerate"),
        "bitsandbytes": _version("bitsandbytes"),
        "bf16": supports_bf16(dev),
        "tf32_matmul": tf32_enabled(),
        "gpu": None,
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        spec = gpu_spec(props.name)
        out["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "sms": props.multi_processor_count,
            "peak_tflops": None if spec is None else {
                k: spec.peak(k) for k in ("fp32", "tf32", "bf16", "fp16", "int8")},
            "spec_source": None if spec is None else spec.source,
        }
    return out


def report() -> dict:
    """Print the machine report (device, formats, versions, peak TFLOP/s) and return it."""
    data = info()
    rows = [
        ("device", data["device"]), ("profile", data["profile"]),
        ("python", data["python"]), ("platform", data["platform"]),
        ("CPU threads", data["cpu_threads"]),
        ("torch", data["torch"]), ("transformers", data["transformers"]),
        ("peft", data["peft"]), ("accelerate", data["accelerate"]),
        ("bitsandbytes", data["bitsandbytes"]),
        ("bf16 supported", data["bf16"]), ("tf32 matmul on", data["tf32_matmul"]),
    ]
    gpu = data["gpu"]
    if gpu:
        rows += [("GPU", gpu["name"]), ("GPU memory", f"{gpu['memory_gib']} GiB"),
                 ("compute capability", gpu["capability"])]
        peaks = gpu["peak_tflops"]
        if peaks:
            text = ", ".join(f"{k} {v:g}" if v else f"{k} n/a" for k, v in peaks.items())
            rows.append(("peak dense TFLOP/s", text))
            rows.append(("  (source)", gpu["spec_source"]))
        else:
            rows.append(("peak dense TFLOP/s", "unknown GPU: add it to labkit.env.GPU_SPECS"))
    else:
        rows.append(("GPU", "none (labs run their CPU-sized versions and plot committed GPU results)"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return data


def matmul_tflops(dtype: torch.dtype = torch.float32, n: int = 4096, repeats: int = 10,
                  dev: torch.device | str | None = None, allow_tf32: bool = False) -> float:
    """Measure dense matmul throughput (TFLOP/s) of an n x n @ n x n product.

    A square matmul does 2 n^3 floating-point operations. On CUDA the timing
    uses events after a warm-up; ``allow_tf32`` lets fp32 run on tensor cores.
    """
    import time

    dev = torch.device(dev) if dev is not None else device()
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        for _ in range(2):  # warm-up: kernels chosen, caches filled
            a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                a @ b
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            t0 = time.perf_counter()
            for _ in range(repeats):
                a @ b
            seconds = time.perf_counter() - t0
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n**3 * repeats / seconds / 1e12
