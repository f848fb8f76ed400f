"""labkit.plots: the lab style and the label placer."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from labkit import plots  # noqa: E402


def test_style_is_at_least_110_dpi():
    plots.use_style()
    assert plt.rcParams["figure.dpi"] >= 110 and plt.rcParams["savefig.dpi"] >= 110


def test_label_points_never_overlap_on_a_crowded_cluster():
    fig, ax = plt.subplots()
    xs = [0.10, 0.12, 0.15, 0.16, 0.18, 1.7, 1.75, 0.35, 0.05]
    ys = [10.2, 10.18, 10.15, 10.2, 10.17, 10.2, 10.3, 8.9, 6.8]
    labels = ["replay 1:10", "replay 1:5", "curriculum", "ewc", "replay 1:1", "full ft", "lora", "lr 6.7e-04",
              "lr 2.0e-04"]
    ax.plot(xs, ys, "o")
    texts = plots.label_points(ax, xs, ys, labels)
    fig.canvas.draw()
    boxes = [plots._text_box(t, fig.canvas.get_renderer()) for t in texts]
    assert sorted(t.get_text() for t in texts) == sorted(labels)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    fig.savefig("/tmp/label_points_demo.png")
    plt.close(fig)
