"""Interactive views for the lessons (ipywidgets; only APIs shared by ipywidgets 7.7 and 8).

Each view is a function returning a small object that displays itself in a notebook and
exposes its controls, so a test can set ``.value`` on a control and look at the result.
The drawing lives in the concept modules (e.g. ``labkit.filters``); this module only wires
controls to it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import ipywidgets as widgets
from IPython.display import Image, display
from matplotlib.figure import Figure
from torch import nn

from labkit.filters import conv_layers, first_conv, plot_filter, plot_filters

__all__ = ["FilterBrowser", "filter_browser"]


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

    def fit_slider() -> None:
        weight = layers[layer_box.value].weight
        limit = (weight.shape[0] if view_box.value == "filter" else weight.shape[1]) - 1
        quiet[0] = True
        try:
            slider.description = view_box.value
            if limit < slider.max:
                slider.value = min(slider.value, limit)
            slider.max = limit
        finally:
            quiet[0] = False

    def on_choice(change) -> None:
        fit_slider()
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
