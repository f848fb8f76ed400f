"""The lab map: which notebooks exist, what they need, and what each profile does.

In the labs: `python -m labkit doctor` prints this map (lab 12 §10 shows its report).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LABS_DIR = Path(__file__).resolve().parent.parent / "labs"


@dataclass(frozen=True)
class Lab:
    number: str
    slug: str
    title: str
    core: str
    gpu_part: str   # what the `full` profile adds on a GPU ("" if nothing GPU-only)

    @property
    def path(self) -> Path:
        return LABS_DIR / f"{self.number}_{self.slug}.ipynb"

    @property
    def ready(self) -> bool:
        return self.path.exists()


LABS = [
    Lab("00", "setup_and_hardware", "Setup and hardware",
        "device, dtypes (tf32 = 19 bits), peak FLOP/s, model-file size rules", "a live matmul TFLOP/s check"),
    Lab("01", "memory_estimation", "Memory estimation",
        "weights + grads + optimizer + activations + KV cache; 16 bytes/param; estimated vs measured",
        "peak memory of real training steps vs the estimator"),
    Lab("02", "mixed_precision", "Mixed precision",
        "fp32/fp16/bf16 ranges, underflow, loss scaling from scratch vs torch.amp", "step time fp32 vs tf32 vs bf16"),
    Lab("03", "gradient_checkpointing", "Gradient checkpointing",
        "recomputation from scratch vs torch.utils.checkpoint; memory-time curve; accumulation",
        "activation memory and step time on a GPU"),
    Lab("04", "lora_from_scratch", "LoRA from scratch",
        "layer, init, scaling, injection into q/k/v, merge; equal to peft", "labkit LoRA vs peft throughput"),
    Lab("05", "quantization_qlora", "Quantization and QLoRA",
        "int8 absmax, outliers, NF4 from scratch vs bitsandbytes, double quant, 4-bit base + LoRA",
        "a 7B model in 4-bit + LoRA"),
    Lab("06", "forgetting", "Catastrophic forgetting",
        "domain fine-tuning erodes general ability; replay, lower LR, EWC, LoRA vs full", "more steps and seeds"),
    Lab("07", "fsdp", "FSDP",
        "DDP vs FSDP sharding, per-rank memory, communication volume, CPU offload, sharded checkpoints",
        "CPU offload on one GPU"),
    Lab("08", "chain_of_thought", "Chain-of-thought prompting",
        "zero-shot, zero-shot-CoT, few-shot-CoT, least-to-most, self-consistency, evaluated", "larger models"),
    Lab("09", "sft_data", "Supervised fine-tuning data",
        "formats, chat templates, loss only on answer tokens, multi-turn, packing, dedup", ""),
    Lab("10", "generation_and_repetition", "Generation and repetition",
        "decoding processors and a KV-cache generate = transformers; repetition measured; prefill vs decode",
        "decode speed and the CUDA caching allocator in bf16, int8 and NF4"),
    Lab("11", "long_context", "Long context",
        "RoPE, position interpolation, NTK, YaRN, llama3 and ALiBi = transformers; perplexity past the trained length; planted-fact recall; KV and attention memory vs length",
        "longer contexts and a longer fine-tune"),
    Lab("12", "gpu_utilisation", "GPU utilisation",
        "FLOPs per token = FlopCounterMode; MFU; three utilisation methods; profiler by operator category",
        "the same sweep on a GPU"),
    Lab("13", "peft_family", "The PEFT family",
        "prompt tuning, P-tuning, prefix / P-tuning v2, (IA)3, Freeze = peft; compared with LoRA at matched budgets",
        "the methods x precision table on a 7B shape"),
    Lab("14", "preference_tuning", "Preference tuning",
        "reward model, DPO = TRL, best-of-n, a beta sweep, an on-policy step", "more steps and a larger policy"),
    Lab("15", "rag", "Retrieval-augmented generation",
        "chunking, BM25, dense + faiss, hybrid; a reader; hallucination measured; LangChain pieces from scratch",
        "a larger reader"),
    Lab("16", "architectures_and_emergence", "Architectures and emergence",
        "causal / prefix-LM / encoder-decoder masks trained side by side; smooth vs exact metrics; in-context learning",
        "a wider model family"),
]
