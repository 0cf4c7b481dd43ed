"""The figures' layout, measured with matplotlib's own renderer: whole-number iteration ticks on Fig. 6, the
grad-flow legend clear of the curves, the worst-mistakes sheet's captions clear of the images."""

from __future__ import annotations

import pytest
import torch

from resnets.analysis import error_plots, plots


@pytest.fixture
def figures(monkeypatch):
    """The figures that plots and error_plots would save, drawn and kept instead (the renderer measures them)."""
    kept = []

    def keep(fig, path, dpi=120):
        fig.canvas.draw()
        kept.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(error_plots, "_save", keep)
    yield kept
    for fig in kept:
        plots.plt.close(fig)


@pytest.mark.parametrize("axis", ["iterations", "epochs"])
@pytest.mark.parametrize(("epochs", "shown"), [((1, 2, 3), {1.0, 2.0, 3.0}), ((2,), {2.0})])
def test_fig6_ticks_are_whole_numbers_on_a_short_run(figures, axis, epochs, shown):
    points = [{"epoch": e, "step": e, "train_err": 0.5 / e, "test_err": 0.6 / e} for e in epochs]
    plots.plot_training_curves({"plain8": points, "resnet8": points}, "fig6.png", axis=axis)
    for ax in figures[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert set(ticks) >= shown and all(float(t).is_integer() for t in ticks), ticks
        assert all(label.get_text().lstrip("−-").isdigit() for label in ax.get_xticklabels() if label.get_text())


def test_run_curves_count_whole_epochs(figures):
    plots.plot_run_curves({"run": [{"epoch": e, "train_err": 0.3, "test_err": 0.3} for e in (1, 2)]}, "curves.png")
    ticks = [t for t in figures[0].axes[0].get_xticks() if 1 <= t <= 2]
    assert ticks == [1.0, 2.0]


def test_the_gradient_flow_legend_covers_no_curve(figures):
    def flow(name: str, depth: int) -> dict:
        layers = [{"depth": i, "input_grad_rms": 10.0 ** (-i / 4)} for i in range(1, depth + 1)]
        blocks = [{"index": i, "gain": 1.0 + 0.01 * i} for i in range(1, depth // 2)]
        return {"model": name, "plain": name.startswith("plain"), "depth": depth, "layers": layers, "blocks": blocks}

    flows = [flow(f"{family}{depth}", depth) for depth in (20, 56, 110) for family in ("plain", "resnet")]
    plots.plot_gradient_flow(flows, "gradflow.png", title="gradient flow")
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1 and len(legends[0].get_texts()) == 6  # one legend, every net in it
    box = legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend lies over a panel's curves"
    assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)  # and inside the figure


@pytest.mark.parametrize("k", [1, 8, 9, 16, 24])
def test_the_worst_mistakes_captions_cover_no_image(figures, k):
    """Two rows and more: each image's three caption lines must stay clear of the images of the row below."""
    labels = [("a very long class name", "another long class name", 0.987)] * k
    error_plots.plot_worst(torch.zeros(k, 3, 32, 32, dtype=torch.uint8), labels, "worst.png")
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    images = [ax.get_images()[0].get_window_extent(renderer) for ax in fig.axes if ax.get_images()]
    assert len(images) == k
    texts = [ax.xaxis.label for ax in fig.axes if ax.get_images()] + list(fig.texts)  # fig.texts: the title
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert not any(extent.overlaps(image) for image in images), text.get_text()
    title = "the most confident mistake" if k == 1 else f"the {k} most confident mistakes"
    assert fig.get_suptitle() == title
