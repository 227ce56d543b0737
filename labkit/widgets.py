"""Interactive views for the lessons (ipywidgets; only APIs shared by ipywidgets 7.7 and 8).

Each view is a function returning a small object that displays itself in a notebook and
exposes its controls, so a test can set ``.value`` on a control and look at the result.
The drawing lives in the concept modules (e.g. ``labkit.filters``); this module only wires
controls to it.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from numbers import Real

import ipywidgets as widgets
from IPython.display import Image, display
from matplotlib.figure import Figure
from torch import nn

from labkit._tables import render_table
from labkit._validate import check_module
from labkit.filters import conv_layers, first_conv, plot_filter, plot_filters
from labkit.heads import stages
from labkit.optim import param_groups
from labkit.strategy import Advice, advise, plot_plane

__all__ = [
    "FilterBrowser",
    "filter_browser",
    "ParamGroupExplorer",
    "param_group_explorer",
    "StrategyExplorer",
    "strategy_explorer",
]


def _show_figure(output: widgets.Output, fig: Figure) -> None:
    """Replace what ``output`` shows with ``fig`` as a PNG (works in any notebook backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    with output:
        output.clear_output(wait=True)
        display(Image(data=buffer.getvalue(), format="png"))


@dataclass(eq=False)
class FilterBrowser:
    """What ``filter_browser`` returns: display it, or use its controls from code.

    Attributes:
        widget: the whole view (a VBox), to place inside other layouts.
        layer: Dropdown over the conv layers, values are dotted names ("layer1.0.conv1").
        view: Dropdown, "filter" (one filter, all its input channels) or "channel" (one input
            channel across all filters).
        index: IntSlider over filters or input channels.
        output: the Output the figure is drawn into.
        figure: the matplotlib Figure now shown.
    """

    widget: widgets.VBox
    layer: widgets.Dropdown
    view: widgets.Dropdown
    index: widgets.IntSlider
    output: widgets.Output
    figure: Figure | None = None

    def _ipython_display_(self) -> None:
        display(self.widget)


def filter_browser(model: nn.Module, *, layer: str | None = None) -> FilterBrowser:
    """Browse a model's conv filters: pick a layer, slide over filters or input channels.

    The "filter" view zooms into one filter (colour image, each input channel, best Gabor
    match and Gabor-likeness); the "channel" view shows one input channel of every filter.
    Weights are read at each redraw, so after training, move a control to see the new ones.

    Args:
        model: any model with ``nn.Conv2d`` layers (a CNN, or a ViT's patch embedding).
        layer: dotted name of the layer shown first; default: the first conv.

    Example:
        >>> browser = filter_browser(torchvision.models.resnet18(weights=None))
        >>> browser.layer.value = "layer1.0.conv1"; browser.index.max
        63
    """
    first_conv(model)  # raises a clear error for a model without conv layers
    layers = conv_layers(model)
    start = next(iter(layers)) if layer is None else layer
    if start not in layers:
        raise KeyError(f"{type(model).__name__} has no conv layer named {start!r}; "
                       f"choose one of: {', '.join(list(layers)[:8])}{', ...' if len(layers) > 8 else ''}.")

    def shape_text(name: str) -> str:
        return "\u00d7".join(str(s) for s in layers[name].weight.shape)

    layer_box = widgets.Dropdown(options=[(f"{name}  ({shape_text(name)})", name) for name in layers],
                                 value=start, description="layer")
    view_box = widgets.Dropdown(options=[("one filter", "filter"), ("one input channel", "channel")],
                                value="filter", description="show")
    slider = widgets.IntSlider(value=0, min=0, max=0, description="filter", continuous_update=False)
    output = widgets.Output()
    browser = FilterBrowser(widgets.VBox([widgets.HBox([layer_box, view_box]), slider, output]),
                            layer_box, view_box, slider, output)
    quiet = [False]  # set while the slider range is adjusted, so it redraws once

    def redraw() -> None:
        name = layer_box.value
        conv = layers[name]
        if view_box.value == "filter":
            fig = plot_filter(conv, slider.value, name=name)
        else:
            j, channels = slider.value, conv.weight.shape[1]
            colour = f" ({'RGB'[j]})" if channels == 3 else ""
            fig = plot_filters(conv.weight[:, j:j + 1],
                               title=f"{name} \u00b7 input channel {j}{colour} of {channels}, every filter")
        browser.figure = fig
        _show_figure(output, fig)

    def fit_slider(*, restart: bool = False) -> None:
        weight = layers[layer_box.value].weight
        limit = (weight.shape[0] if view_box.value == "filter" else weight.shape[1]) - 1
        quiet[0] = True
        try:
            slider.description = view_box.value
            if restart:  # filter 5 and input channel 5 have nothing in common: start again at 0
                slider.value = 0
            elif limit < slider.max:
                slider.value = min(slider.value, limit)
            slider.max = limit
        finally:
            quiet[0] = False

    def on_choice(change) -> None:
        fit_slider(restart=change["owner"] is view_box)
        redraw()

    def on_index(change) -> None:
        if not quiet[0]:
            redraw()

    layer_box.observe(on_choice, names="value")
    view_box.observe(on_choice, names="value")
    slider.observe(on_index, names="value")
    fit_slider()
    redraw()
    return browser


def _show_text(output: widgets.Output, text: str) -> None:
    """Replace what ``output`` shows with ``text`` (monospace, so tables stay aligned)."""
    with output:
        output.clear_output(wait=True)
        print(text)


# --------------------------------------------------------------------------- lesson 03
@dataclass(eq=False)
class ParamGroupExplorer:
    """What :func:`param_group_explorer` returns: display it, or drive its controls from code.

    Attributes:
        widget: the whole view (a VBox), to place inside other layouts.
        decay: FloatSlider, the factor between neighbouring stages, in (0, 1].
        base_lr: FloatLogSlider, the head's learning rate.
        plot: Output holding the bar chart.
        table: Output holding the text table.
        figure: the matplotlib Figure now shown.
        rates: stage name -> learning rate (None for a frozen stage), as now shown.
        text: the table now shown.
    """

    widget: widgets.VBox
    decay: widgets.FloatSlider
    base_lr: widgets.FloatLogSlider
    plot: widgets.Output
    table: widgets.Output
    figure: Figure | None = None
    rates: dict[str, float | None] = field(default_factory=dict)
    text: str = ""

    def _ipython_display_(self) -> None:
        display(self.widget)


def _stage_rates(model: nn.Module, base_lr: float, decay: float) -> tuple[dict, dict]:
    """(stage -> lr or None when frozen, stage -> parameter count), from param_groups."""
    groups = param_groups(model, base_lr=base_lr, decay=decay)
    lr_of_stage = {}
    for g in groups:
        lr_of_stage.setdefault(g["stage"], g["lr"])
    parts = stages(model)
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    return {name: lr_of_stage.get(name) for name in parts}, counts


def _rates_table(rates: dict, counts: dict, base_lr: float) -> str:
    rows = [[name, "frozen" if lr is None else f"{lr:.2e}", "-" if lr is None else f"{base_lr / lr:.1f}",
             f"{counts[name]:,}"] for name, lr in rates.items()]
    return render_table(["stage", "lr", "x slower than head", "parameters"], rows, align="lrrr",
                        min_widths=[0, 9, 18, 12], rule=False)


def _rates_figure(rates: dict, base_lr: float, decay: float) -> Figure:
    names = list(rates)
    values = [rates[n] for n in names]
    fig = Figure(figsize=(7.5, 3.4), layout="constrained")
    ax = fig.subplots()
    x = range(len(names))
    heights = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(x, heights, color=["#9aa5b1" if v is None else f"C{0 if i < len(names) - 1 else 1}"
                                     for i, v in enumerate(values)])
    ax.bar_label(bars, labels=["frozen" if v is None else f"{v:.2e}" for v in values], padding=2, fontsize=8)
    ax.set_xticks(list(x), names)
    ax.set_yscale("log")
    trained = [v for v in values if v is not None]
    low, high = min(trained), max(trained)
    ax.set_ylim(low / 5, high * 5)
    ax.set_ylabel("learning rate (log scale)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ratio = high / low
    ax.set_title(f"base_lr {base_lr:.1e}, decay {decay:.2f}: the slowest trained stage learns "
                 f"{ratio:,.0f}x slower than the head", fontsize=9)
    return fig


def param_group_explorer(model: nn.Module | None = None, *, base_lr: float = 1e-3,
                         decay: float = 0.3) -> ParamGroupExplorer:
    """Move ``decay`` and the base learning rate; see each stage's rate from ``param_groups``.

    Args:
        model: the network whose stages get the rates (default: a fresh
            ``torchvision.models.resnet18(weights=None)``; rates depend on the stages only).
            Frozen stages are shown as frozen: ``param_groups`` gives them no group.
        base_lr: starting value of the head's learning rate, in [1e-5, 1e-1].
        decay: starting value of the factor between neighbouring stages, in [0.05, 1].

    Example:
        >>> explorer = param_group_explorer(torchvision.models.resnet50(weights=None))
        >>> explorer.decay.value = 0.5; round(explorer.rates["stem"], 8)
        3.125e-05
    """
    if model is None:
        import torchvision

        model = torchvision.models.resnet18(weights=None)
    check_module(model, "param_group_explorer")
    for label, value, lo, hi in (("base_lr", base_lr, 1e-5, 1e-1), ("decay", decay, 0.05, 1.0)):
        if isinstance(value, bool) or not isinstance(value, Real) or not lo <= value <= hi:
            raise ValueError(f"param_group_explorer: {label} must be a number in [{lo:g}, {hi:g}] (the slider's "
                             f"range), got {value!r}. E.g. base_lr=1e-3, decay=0.3.")
    param_groups(model, base_lr=base_lr, decay=decay)  # raises a clear error for a fully frozen model

    decay_box = widgets.FloatSlider(value=float(decay), min=0.05, max=1.0, step=0.05, description="decay",
                                    readout_format=".2f", continuous_update=False)
    lr_box = widgets.FloatLogSlider(value=float(base_lr), base=10, min=-5, max=-1, step=0.25,
                                    description="base lr", readout_format=".1e", continuous_update=False)
    plot, table = widgets.Output(), widgets.Output()
    explorer = ParamGroupExplorer(widgets.VBox([widgets.HBox([decay_box, lr_box]), plot, table]),
                                  decay_box, lr_box, plot, table)

    def redraw(change=None) -> None:
        rates, counts = _stage_rates(model, lr_box.value, decay_box.value)
        explorer.rates = rates
        explorer.text = _rates_table(rates, counts, lr_box.value)
        explorer.figure = _rates_figure(rates, lr_box.value, decay_box.value)
        _show_figure(plot, explorer.figure)
        _show_text(table, explorer.text)

    decay_box.observe(redraw, names="value")
    lr_box.observe(redraw, names="value")
    redraw()
    return explorer


# --------------------------------------------------------------------------- lesson 04
@dataclass(eq=False)
class StrategyExplorer:
    """What :func:`strategy_explorer` returns: display it, or drive its controls from code.

    Attributes:
        widget: the whole view (a VBox).
        log_images: FloatSlider, log10 of the number of labelled training images (1 to 7); its
            readout is the ``count`` label, which shows the number of images itself.
        domain_gap: FloatSlider, 0 (ImageNet-like photos) to 1 (nothing like them).
        plot: Output holding the plane with the point.
        advice_box: Output holding the advice text.
        figure: the matplotlib Figure now shown.
        advice: the :class:`labkit.strategy.Advice` now shown.
        text: the advice text now shown.
        count: Label showing the number of images (e.g. "300 images").
        exact: the number of images it was called with, shown exactly until the slider moves.
    """

    widget: widgets.VBox
    log_images: widgets.FloatSlider
    domain_gap: widgets.FloatSlider
    plot: widgets.Output
    advice_box: widgets.Output
    figure: Figure | None = None
    advice: Advice | None = None
    text: str = ""

    count: widgets.Label | None = None
    exact: int | None = None  # the count it was called with, while the slider has not moved

    @property
    def n_images(self) -> int:
        """The number of images: the one given, until the slider moves; then 10 ** log_images, rounded."""
        if self.exact is not None and self.log_images.value == _log_position(self.exact):
            return self.exact
        return max(1, round(10 ** self.log_images.value))

    def _ipython_display_(self) -> None:
        display(self.widget)


def _log_position(n_images: int) -> float:
    """Where ``n_images`` sits on the log10 slider (steps of 0.1)."""
    return round(math.log10(n_images), 1)


def strategy_explorer(*, n_images: int = 300, domain_gap: float = 0.8) -> StrategyExplorer:
    """Place your dataset on the data-size by domain-gap plane and read the advice.

    Args:
        n_images: starting number of labelled training images, 10 to 10,000,000.
        domain_gap: starting domain gap, 0 (ImageNet-like photos) to 1 (nothing like them).

    Example:
        >>> explorer = strategy_explorer()
        >>> explorer.log_images.value = 5; explorer.advice.strategy
        'full_finetune'
    """
    if isinstance(n_images, bool) or not isinstance(n_images, int) or not 10 <= n_images <= 10_000_000:
        raise ValueError(f"strategy_explorer: n_images must be an int from 10 to 10,000,000 (the plane's range), "
                         f"got {n_images!r}.")
    if isinstance(domain_gap, bool) or not isinstance(domain_gap, Real) or not 0 <= domain_gap <= 1:
        raise ValueError(f"strategy_explorer: domain_gap must be a number in [0, 1] (0: ImageNet-like photos, "
                         f"1: nothing like them), got {domain_gap!r}.")
    wide = {"description_width": "initial"}  # the whole label, never cut to "log10 im..."
    size_box = widgets.FloatSlider(value=_log_position(n_images), min=1.0, max=7.0, step=0.1,
                                   description="images (log10 scale)", readout=False, style=wide,
                                   continuous_update=False)
    count = widgets.Label()
    gap_box = widgets.FloatSlider(value=float(domain_gap), min=0.0, max=1.0, step=0.05, description="domain gap",
                                  readout_format=".2f", style=wide, continuous_update=False)
    plot, advice_box = widgets.Output(), widgets.Output()
    explorer = StrategyExplorer(widgets.VBox([widgets.HBox([size_box, count, gap_box]), plot, advice_box]),
                                size_box, gap_box, plot, advice_box, count=count, exact=n_images)

    def redraw(change=None) -> None:
        n, gap = explorer.n_images, float(gap_box.value)
        count.value = f"{n:,} images"
        explorer.advice = advise(n, gap)
        explorer.text = f"{n:,} images, domain gap {gap:.2f} -> {explorer.advice}"
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        plot_plane({f"your data ({n:,} images)": (n, gap)}, ax=fig.subplots())
        explorer.figure = fig
        _show_figure(plot, fig)
        _show_text(advice_box, explorer.text)

    size_box.observe(redraw, names="value")
    gap_box.observe(redraw, names="value")
    redraw()
    return explorer
