"""labkit.parallelism: the 3D-layout calculator of lab 07 §13, against hand-computed bills."""
import pytest

from labkit import dist, models, parallelism as P
from labkit.errors import LabkitError

SHAPE = P.Shape("toy", 1.2e9, 8, 1024, 16)
NODE = P.Cluster(1, 8, 80, 100.0)


def test_pure_data_parallel_is_zero_memory_and_comm_volume():
    p = P.plan(SHAPE, NODE, tp=1, pp=1, zero_stage=2, seq_len=512, micro_batch=2, global_batch=64)
    assert p.dp == 8 and p.micro_batches == 4
    assert p.model_state_bytes == dist.zero_memory(1.2e9, 8, 2)
    assert p.dp_bytes == pytest.approx(dist.comm_volume(1.2e9, "ddp", n_gpus=8))
    assert p.tp_bytes == 0 and p.pp_bytes == 0 and p.bubble == 0
    s, b, h, a = 512, 2, 1024, 16        # Korthikanti et al. 2022, eq. 2 without TP: sbh(34 + 5as/h)
    assert p.activation_bytes == pytest.approx(8 * s * b * h * (34 + 5 * a * s / h))


def test_tensor_and_pipeline_bytes_by_hand():
    p = P.plan(SHAPE, NODE, tp=4, pp=2, zero_stage=1, seq_len=256, micro_batch=1, global_batch=16)
    assert (p.tp, p.pp, p.dp, p.micro_batches) == (4, 2, 1, 16)
    msg = 2 * 256 * 1 * 1024                          # one bf16 activation
    assert p.tp_bytes == pytest.approx(4 * 4 * 16 * 2 * 3 / 4 * msg)   # 4 all-reduces x 4 layers x 16 micro-batches
    assert p.pp_bytes == 2 * 16 * msg
    assert p.dp_bytes == 0
    assert p.model_state_bytes == dist.zero_memory(1.2e9 / 8, 1, 1)
    assert p.bubble == pytest.approx(dist.bubble_fraction(2, 16)) == pytest.approx(1 / 17)
    compute = 6 * 1.2e9 * 16 * 256 / (8 * 100e12 * 0.4)
    assert p.compute_s == pytest.approx(compute)
    comm = (p.tp_bytes + p.pp_bytes) / P.LINKS["NVLink 3 (A100)"]
    assert p.comm_s == pytest.approx(comm) and p.step_s == pytest.approx(compute / (1 - 1 / 17) + comm)


def test_recompute_keeps_two_bytes_per_hidden_and_costs_a_forward():
    p = P.plan(SHAPE, NODE, tp=1, pp=1, seq_len=128, micro_batch=1, global_batch=8, recompute=True)
    assert p.activation_bytes == 8 * 2 * 128 * 1024
    q = P.plan(SHAPE, NODE, tp=1, pp=1, seq_len=128, micro_batch=1, global_batch=8)
    assert p.compute_s == pytest.approx(q.compute_s * 8 / 6)


def test_groups_that_leave_the_node_use_the_slow_link():
    two = P.Cluster(2, 8, 80, 100.0)
    inside = P.plan(SHAPE, two, tp=8, pp=1, global_batch=16)
    across = P.plan(SHAPE, two, tp=16, pp=1, global_batch=16)
    assert inside.tp_link == two.intra_link and inside.dp_link == two.inter_link
    assert across.tp_link == two.inter_link
    assert across.comm_s > inside.comm_s


def test_plans_fit_first_then_fastest_and_best():
    cluster = P.Cluster(64, 8, 80, 312.0)
    found = P.plans(P.SHAPES["gpt3-175b"], cluster, global_batch=1536)
    fits = [p.fits for p in found]
    assert fits == sorted(fits, reverse=True)
    fitting = [p.step_s for p in found if p.fits]
    assert fitting == sorted(fitting)
    top = P.best(P.SHAPES["gpt3-175b"], cluster, global_batch=1536)
    assert top == found[0] and top.fits
    assert not P.plan(P.SHAPES["gpt3-175b"], cluster, 1, 1, global_batch=1536).fits   # 175B does not fit DP alone
    assert P.best(P.SHAPES["gpt3-175b"], P.Cluster(1, 1, 80, 312.0)) is None


def test_shape_from_config_counts_parameters():
    cfg = models.config("lab-tiny")
    s = P.Shape.from_config(cfg, "lab-tiny")
    assert s.params == models.count_params(models.build(cfg, device="meta"))
    assert (s.layers, s.hidden, s.heads) == (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads)


@pytest.mark.parametrize("gpus, kwargs, match", [
    (8, dict(tp=3, pp=1), "does not divide"),
    (8, dict(tp=1, pp=1, global_batch=12), "multiple"),
    (6, dict(tp=1, pp=3), "divide the 16 heads and pp the 8 layers"),
    (8, dict(tp=0, pp=1), "positive integer"),
    (8, dict(tp=1, pp=1, mfu=0), "mfu"),
])
def test_bad_layouts_are_one_line_errors(gpus, kwargs, match):
    with pytest.raises(LabkitError, match=match) as err:
        P.plan(SHAPE, P.Cluster(1, gpus, 80, 100.0), **kwargs)
    assert "\n" not in str(err.value)
