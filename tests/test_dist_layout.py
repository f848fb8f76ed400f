"""labkit.dist as a package split by role (issue 24): every name still reachable from
``labkit.dist``, `Sizes` as a frozen dataclass that still unpacks like the old tuples, the
counter's public `CommCounter.wrap`, and the CLI's argument checks before any training."""
import dataclasses
import inspect

import pytest
import torch

from labkit import dist
from labkit.dist import comm, experiment, launcher, tp, zero
from labkit.errors import LabkitError

ROLES = {launcher: ["launch", "init_worker", "write_result", "worker_main", "script_module", "save_functions",
                  "kill_job", "free_port", "backend_for", "Worker", "SCRIPTS_DIR", "LAST_LOG"],
         comm: ["local_bytes", "optimizer_bytes", "CommCounter", "count_ddp", "ring_wire_bytes",
                "reduce_scatter_sim", "ring_allreduce_sim", "comm_volume", "comm_time", "LINKS"],
         zero: ["shard_layout", "flat_shard", "unit_views", "gather_full", "zero3_step", "tiny_lm",
                "zero_parts", "zero_memory"],
         tp: ["ColumnParallelLinear", "RowParallelLinear", "tp_mlp_forward", "bubble_fraction"],
         experiment: ["Sizes", "SIZES", "model_config", "corpus_tokens", "global_batches", "rank_slice",
                      "add_run_args", "train_single", "load_sharded", "main"]}


def test_every_name_is_re_exported_from_its_role_module():
    for module, names in ROLES.items():
        assert set(names) <= set(module.__all__), module.__name__
        for name in module.__all__:
            assert getattr(dist, name) is getattr(module, name), name
    assert set(dist.__all__) == {n for m in ROLES for n in m.__all__}
    assert inspect.isfunction(dist.launch)                     # the function, not a submodule


def test_paths_still_point_at_the_repository():
    assert (dist.REPO_ROOT / "labkit" / "dist" / "__init__.py").exists()
    assert (dist.SCRIPTS_DIR / "fsdp_train.py").exists()


def test_sizes_are_a_frozen_dataclass_that_unpacks_like_the_old_tuples():
    old = {"smoke": (2, 3, 4, 32), "cpu": (4, 8, 8, 64), "full": (4, 20, 16, 128)}
    assert {p: tuple(s) for p, s in dist.SIZES.items()} == old
    s = dist.SIZES["smoke"]
    assert isinstance(s, dist.Sizes) and (s.layers, s.steps, s.batch, s.seq_len) == (2, 3, 4, 32)
    layers, steps, batch, seq_len = dist.SIZES["cpu"]        # lab 07 / lab 12 setup cells
    assert (layers, steps, batch, seq_len) == (4, 8, 8, 64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 5


def test_comm_counter_wrap_is_public_and_counts():
    assert "def wrap(self, fn, name, kind):" in inspect.getsource(dist.CommCounter.wrap)
    counter = dist.CommCounter()
    seen = []
    counted = counter.wrap(lambda t: seen.append(t), "all_reduce", "all_reduce")
    counted(torch.zeros(10))                                     # not initialised: world 1
    assert counter.bytes["all_reduce"] == 80 and counter.calls["all_reduce"] == 1 and len(seen) == 1
    assert counted.__wrapped__ is not None


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--nproc", "0"], ["--timeout", "0"]])
def test_fsdp_cli_checks_arguments_before_training(monkeypatch, argv):
    def refuse(*a, **k):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(experiment, "train_single", refuse)   # where main looks them up now
    monkeypatch.setattr(experiment, "launch", refuse)
    with pytest.raises(LabkitError, match=argv[0]):
        dist.main(["--profile", "smoke", *argv])
