import pytest
import torch

from labkit import env
from labkit.errors import LabkitError


def test_profile_default_and_override(monkeypatch):
    monkeypatch.delenv("LABKIT_PROFILE", raising=False)
    assert env.profile() == ("full" if torch.cuda.is_available() else "cpu")
    for p in env.PROFILES:
        monkeypatch.setenv("LABKIT_PROFILE", p)
        assert env.profile() == p
    monkeypatch.setenv("LABKIT_PROFILE", "fast")
    with pytest.raises(LabkitError, match="smoke, cpu, full"):
        env.profile()


def test_by_profile_picks_size():
    assert env.by_profile(1, 2, 3, profile_name="smoke") == 1
    assert env.by_profile(1, 2, 3, profile_name="full") == 3
    with pytest.raises(LabkitError):
        env.by_profile(1, 2, 3, profile_name="huge")


def test_seed_everything_is_reproducible():
    env.seed_everything(123)
    a = torch.randn(5)
    env.seed_everything(123)
    assert torch.equal(a, torch.randn(5))


@pytest.mark.parametrize("cuda_name,key", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H100 PCIe", "H100-PCIe"), ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("Tesla T4", "T4"),
    ("NVIDIA A10G", "A10G"), ("NVIDIA L4", "L4"), ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("NVIDIA GeForce RTX 3090", "RTX-3090"),
])
def test_gpu_spec_lookup_by_cuda_name(cuda_name, key):
    assert env.gpu_spec(cuda_name) is env.GPU_SPECS[key]


def test_gpu_specs_are_consistent():
    assert env.gpu_spec("Some Future GPU") is None
    t4 = env.GPU_SPECS["T4"]
    assert t4.bf16 is None and t4.tf32 is None  # Turing: no bf16, no tf32
    for spec in env.GPU_SPECS.values():
        # dense int8 is 2x dense fp16 on every tensor-core generation listed
        assert spec.int8 == pytest.approx(2 * spec.fp16, rel=0.01) or spec.name.startswith("NVIDIA GeForce")
        assert spec.fp16 > spec.fp32
    h100 = env.GPU_SPECS["H100-SXM"]
    assert h100.bf16 == pytest.approx(2 * h100.tf32, rel=0.01)


def test_report_prints_versions(capsys):
    data = env.report()
    out = capsys.readouterr().out
    for key in ("torch", "transformers", "peft", "bitsandbytes", "bf16 supported"):
        assert key in out
    assert data["torch"] == torch.__version__


def test_require_cuda_is_one_clear_line():
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(LabkitError) as err:
        env.require_cuda("measuring peak memory")
    assert "\n" not in str(err.value) and "GPU" in str(err.value)
