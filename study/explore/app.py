"""The explorer's page: controls wired to :mod:`study.explore` functions, in JupyterLab or served by Voilà.

The widgets only read controls and draw; every number comes from ``Explorer.view`` (tested without a
browser), so a change in ipywidgets can break the page, never the numbers. Without widgets (papermill,
CI) the same views are drawn once for the notebook's parameters.
"""

from __future__ import annotations

import html
import numbers
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from study.compression import constraints
from study.contract import FULL_PRECISION_BITS, NM_SCHEME, PRUNING_SCHEMES, is_nm, nm_pattern
from study.costs import encoding, storage
from study.explore import compare, exercises
from study.explore.figures import layer_figure
from study.explore.layer import INDEX_FORMATS, SCHEME_CHOICES, STORAGE_PARTS, WEIGHT_BITS, Choice
from study.explore.model_view import whole_model
from study.explore.session import Candidate, Explorer, choose, find_models

PART_HELP = {"values": "b-bit codes of the stored weights", "indices": "where the weights are (runs, columns, flags)",
             "fillers": "run-length escape codes for long zero runs", "pointers": "where each row or column starts",
             "scale": "one float32 scale alpha: the codes are its integer multiples",
             "codebook": "float32 levels the codes point to (non-uniform levels only)", "header": "format, shape and widths"}


def open_session(model: str = "auto", params_file: str | Path = "params.yaml", out_root: str | Path = "tmp/explore",
                 val_images: int = 2000, published_root: str | Path = ".") -> Explorer:
    """The explorer on the model named by the notebook's ``model`` parameter (see :func:`session.choose`)."""
    return Explorer(choose(model, params_file, out_root, published_root), val_images)


AUTO = "auto"
PRUNED_UNITS = {"irregular": "any weight", "filter": "whole output filters", "channel": "whole input channels",
               "column": "one input channel at one kernel position across all filters"}


def scheme_tip(scheme: str) -> str:
    """What a scheme button prunes, shown on hover."""
    if is_nm(scheme):
        n, m = nm_pattern(scheme)
        return f"at most {n} of every {m} consecutive weights, input channels innermost: {m / n:g}x"
    return f"prunes {PRUNED_UNITS[scheme]}"


SCHEME_TIPS = [scheme_tip(s) for s in SCHEME_CHOICES]
FRESH_START = {"scheme": "irregular", "rate": 20.0, "weight_bits": 4}  # a dense model's first view: much to see


def starting_point(session: Explorer, layer: str) -> dict[str, Any]:
    """Where a view of ``layer`` starts: a stored pruned model at its own scheme, its own bits and the layer's own rate
    (the view then shows the layer as it is stored); a stored dense model at its own bits when quantized; else
    irregular at 20x and 4 bits."""
    stored = session.stored or {}
    start = dict(FRESH_START)
    bits = int(stored.get("weight_bits", 32))
    scheme = str(stored.get("scheme"))
    pruned = scheme in PRUNING_SCHEMES or scheme == NM_SCHEME or is_nm(scheme)
    if bits < 32 or pruned:
        start["weight_bits"] = bits
    if scheme == NM_SCHEME:  # the pattern this layer keeps (the cheapest, as stored), which fixes the rate
        pattern = storage.layer_storage(session.layers[layer].weight.detach(), NM_SCHEME, FULL_PRECISION_BITS).get("pattern")
        if pattern:
            n, m = nm_pattern(pattern)
            start.update(scheme=pattern, rate=m / n)
    elif is_nm(scheme):
        n, m = nm_pattern(scheme)
        start.update(scheme=scheme, rate=m / n)
    elif scheme in PRUNING_SCHEMES:
        weight = session.layers[layer].weight.detach()
        units = constraints.group_count(weight, stored["scheme"])
        kept = int(torch.count_nonzero(weight)) if stored["scheme"] == "irregular" else units - _empty_groups(weight, stored["scheme"])
        start.update(scheme=stored["scheme"], rate=units / max(kept, 1))
    return start


def _empty_groups(weight: torch.Tensor, scheme: str) -> int:
    matrix, shape = encoding.as_matrix(weight)
    return int((encoding.group_view(matrix, shape, scheme) == 0).all(axis=1).sum())


def initial_choice(session: Explorer, layer: str = AUTO, scheme: str = AUTO, rate: float | str = AUTO,
                   weight_bits: int | str = AUTO, index_format: str = "auto", index_bits: int | None = None) -> Choice:
    """The first view: the notebook's parameters, each ``"auto"`` one from :func:`starting_point`."""
    layer = session.largest_layer if layer == AUTO else layer
    start = starting_point(session, layer)
    return Choice(layer, start["scheme"] if scheme == AUTO else scheme, float(start["rate"] if rate == AUTO else rate),
                  int(start["weight_bits"] if weight_bits == AUTO else weight_bits), index_format, index_bits)


def summary_html(view: dict[str, Any]) -> str:
    """The numbers of one view as an HTML table; each storage cell carries ``data-part`` for readers and tests."""
    row, choice = view["storage"], view["choice"]
    fmt = row["format"] + (f" with {row['index_bits']}-bit runs" if row.get("index_bits") else "")
    cells = "".join(f"<tr><td>{part}</td><td class='bits' data-part='{part}'>{row[part]:,}</td>"
                    f"<td>{html.escape(PART_HELP[part])}</td></tr>" for part in STORAGE_PARTS)
    energy_nj = sum(view["energy_pj"].values()) / 1000
    accuracy = view.get("val_accuracy")
    accuracy_line = (f"<p>Validation accuracy with this layer changed (one shot, no retraining, {view['val_images']:,} images): "
                     f"<b data-field='val_accuracy'>{100 * accuracy:.2f}%</b> (unchanged: {100 * view['baseline_val_accuracy']:.2f}%); "
                     f"whole model at {view['model_rate']:.1f}x.</p>") if accuracy is not None else ""
    return (
        f"<div class='explore-summary'><p><b>{html.escape(choice.layer)}</b>: {choice.scheme} at {choice.rate:.3g}x "
        f"(layer rate {view['layer_rate']:.1f}x), {'fp32' if choice.weight_bits == 32 else f'{choice.weight_bits}-bit'} "
        f"weights, stored as <span data-field='format'>{html.escape(fmt)}</span>.</p>"
        f"<table><tr><th>part</th><th>bits</th><th>what it holds</th></tr>{cells}"
        f"<tr><td><b>total</b></td><td class='bits' data-part='total_bits'><b>{row['total_bits']:,}</b></td>"
        f"<td>{row['total_bits'] / 8000:.2f} KB; dense fp32: {view['dense_fp32_bits'] / 8000:.2f} KB</td></tr>"
        f"<tr><td>log2 C(n,k)</td><td data-part='ideal_index_bits'>{row['ideal_index_bits']:,.0f}</td>"
        "<td>bits an ideal code spends on an average mask of this size (indices + pointers + fillers: "
        f"{view['structure_bits']:,})</td></tr></table>"
        f"<p>Energy per inference: <b data-field='energy_nj'>{energy_nj:.3f} nJ</b>.</p>{accuracy_line}</div>"
    )


MODEL_COLUMNS = ("format", "value bits", "index bits", "filler bits", "pointer bits", "scale, codebook, header bits",
                 "total bits", "KB", "energy, weights from DRAM (nJ)", "energy, weights on chip (nJ)")


def model_table(session: Explorer):
    """The whole-model view of a published model (None for a checkpoint that does not say how it is stored)."""
    if session.stored is None:
        return None
    return whole_model(session.model, session.model_name, session.stored["scheme"], int(session.stored["weight_bits"]),
                       session.params)


def _cell(value: Any) -> str:
    """A table cell: counts with thousands separators, energies and KB to three decimals (numpy types included)."""
    if isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return f"{float(value):,.3f}"
    return html.escape(str(value))


def model_caption(session: Explorer) -> str:
    stored = session.stored
    width = "fp32" if int(stored["weight_bits"]) == 32 else f"{int(stored['weight_bits'])}-bit"
    return (f"<p><b>The whole model as stored</b> ({html.escape(str(stored['scheme']))}, {width}; T5/T6 of the report "
            "count it the same way). Choose a layer to open it below.</p>")


def model_table_html(session: Explorer) -> str:
    """The whole-model view as an HTML table (static pages); each total cell carries ``data-model-part``."""
    table = model_table(session)
    if table is None:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("layer", *MODEL_COLUMNS))
    rows = "".join("<tr>" + f"<td>{html.escape(str(r['layer']))}</td>" + "".join(
        f"<td data-model-part='{html.escape(c)}'>{_cell(r[c])}</td>" if r["layer"] == "total" else f"<td>{_cell(r[c])}</td>"
        for c in MODEL_COLUMNS) + "</tr>" for r in table.to_dict("records"))
    return f"<div class='explore-whole-model'>{model_caption(session)}<table><tr>{head}</tr>{rows}</table></div>"


def compare_html(numbers: dict[str, dict[str, Any]]) -> str:
    """Two choices side by side; each number carries ``data-compare='<first|second>-<field>'`` for readers and tests."""
    def label(choice: Choice) -> str:
        width = "fp32" if choice.weight_bits == 32 else f"{choice.weight_bits}-bit"
        return html.escape(f"{choice.scheme} at {choice.rate:g}x, {width}, {choice.index_format} index")

    fields = (("total_bits", "stored bits", "{:,}"), ("kb", "KB", "{:,.2f}"), ("energy_nj", "energy (nJ)", "{:,.3f}"),
              ("val_accuracy", "one-shot validation accuracy", "{:.2%}"), ("layer_rate", "layer rate (x)", "{:,.1f}"))
    cell = "style='padding: 2px 14px; text-align: right'"  # the two columns never run together, however narrow
    rows = "".join(f"<tr><td style='padding-right: 14px'>{name}</td>" + "".join(
        f"<td {cell} data-compare='{side}-{key}'>{fmt.format(numbers[side][key])}</td>" for side in ("first", "second"))
        + "</tr>" for key, name, fmt in fields)
    head = "".join(f"<th {cell} data-compare-heading='{side}'>{side}<br><span style='font-weight: normal'>"
                   f"{label(numbers[side]['choice'])}</span></th>" for side in ("first", "second"))
    return f"<table class='explore-compare-table'><tr><th></th>{head}</tr>{rows}</table>"


def show_static(session: Explorer, choice: Choice, show_answers: bool = False) -> None:
    """The views for one choice as plain outputs (what papermill records and CI checks)."""
    from IPython.display import HTML, Markdown, display

    if session.stored is not None:
        display(HTML(model_table_html(session)))
    view = session.view(choice)
    fig = layer_figure(view)
    display(fig)
    plt.close(fig)
    display(HTML(summary_html(view)))
    for number, exercise in enumerate(exercises.EXERCISES, 1):
        display(Markdown(f"**Exercise {number}: {exercise.title}.** {exercise.question} *{exercise.look_for}*"))
        if show_answers:
            display(Markdown(f"> {exercise.answer(session)}"))


class App:
    """Controls, the figure and the numbers; every change redraws from ``Explorer.view``."""

    def __init__(self, session: Explorer, choice: Choice, candidates: list[Candidate]) -> None:
        import ipywidgets as w

        self.session = session
        self._quiet = False
        labels = [c.label for c in candidates]
        if session.candidate.label not in labels:
            candidates = [session.candidate, *candidates]
        self.candidates = {c.label: c for c in candidates}
        style = {"description_width": "110px"}
        self.model = w.Dropdown(options=list(self.candidates), value=session.candidate.label, description="model",
                                style=style, layout=w.Layout(width="520px"))
        self.layer = w.Dropdown(options=list(session.layers), value=choice.layer, description="layer", style=style)
        self.scheme = w.ToggleButtons(options=list(SCHEME_CHOICES), value=choice.scheme, description="scheme", style=style,
                                      tooltips=SCHEME_TIPS)
        self.rate = w.FloatLogSlider(value=choice.rate, base=10, min=0, max=3, step=0.02, description="pruning rate (x)",
                                     style=style, readout_format=".1f", continuous_update=False, layout=w.Layout(width="520px"))
        self.bits = w.Dropdown(options=[(f"{b}-bit" if b != 32 else "fp32", b) for b in WEIGHT_BITS],
                               value=choice.weight_bits, description="weight bits", style=style)
        self.index_format = w.Dropdown(options=list(INDEX_FORMATS), value=choice.index_format, description="index format",
                                       style=style)
        # 0 stands for "the cheapest width" (None): ipywidgets shows no label for a None value
        self.index_bits = w.Dropdown(options=[("cheapest", 0), *[(str(b), b) for b in range(1, 17)]],
                                     value=choice.index_bits or 0, description="run-length bits", style=style)
        for control, name in ((self.model, "model"), (self.layer, "layer"), (self.scheme, "scheme"), (self.rate, "rate"),
                              (self.bits, "bits"), (self.index_format, "index-format"), (self.index_bits, "index-bits")):
            control.add_class(f"explore-{name}")
        self.status = w.HTML()
        self.summary = w.HTML()
        self.summary.add_class("explore-numbers")
        self.figure = w.Output()
        self.model.observe(self._model_changed, names="value")
        for control in (self.layer, self.scheme, self.rate, self.bits, self.index_format, self.index_bits):
            control.observe(self.refresh, names="value")
        self.exercises = self._exercise_panel(w)
        self.compare_panel = self._compare_panel(w, style)
        self.model_panel = w.VBox()
        self.model_panel.add_class("explore-whole-model")
        controls = w.VBox([self.model, self.layer, self.scheme, self.rate, self.bits, self.index_format, self.index_bits])
        self.widget = w.VBox([self.model_panel, controls, self.compare_panel, self.status, self.summary, self.figure,
                              self.exercises])
        self._fill_model_panel()
        self.refresh()

    def _compare_panel(self, w: Any, style: dict[str, str]) -> Any:
        """A second choice on the same layer, its numbers beside the first's, and the accuracy-matching button."""
        self.comparing = w.ToggleButton(value=False, description="compare with a second choice", layout=w.Layout(width="260px"))
        self.scheme2 = w.ToggleButtons(options=list(SCHEME_CHOICES), value="channel", description="second scheme",
                                       style=style, tooltips=SCHEME_TIPS)
        self.rate2 = w.FloatLogSlider(value=4.0, base=10, min=0, max=3, step=0.02, description="second rate (x)",
                                      style=style, readout_format=".2f", continuous_update=False, layout=w.Layout(width="520px"))
        self.bits2 = w.Dropdown(options=[(f"{b}-bit" if b != 32 else "fp32", b) for b in WEIGHT_BITS], value=4,
                                description="second bits", style=style)
        self.index_format2 = w.Dropdown(options=list(INDEX_FORMATS), value="auto", description="second index", style=style)
        self.match = w.Button(description="match the first one's accuracy", layout=w.Layout(width="260px"))
        self.compared = w.HTML()
        for control, name in ((self.comparing, "compare"), (self.scheme2, "scheme2"), (self.rate2, "rate2"),
                              (self.bits2, "bits2"), (self.index_format2, "index-format2"), (self.match, "match"),
                              (self.compared, "compared")):
            control.add_class(f"explore-{name}")
        second = w.VBox([self.scheme2, self.rate2, self.bits2, self.index_format2, self.match, self.compared],
                        layout=w.Layout(display="none"))
        self.comparing.observe(lambda change: setattr(second.layout, "display", "flex" if change["new"] else "none"),
                               names="value")
        for control in (self.comparing, self.scheme2, self.rate2, self.bits2, self.index_format2):
            control.observe(self.refresh_compare, names="value")
        self.match.on_click(self.match_accuracy)
        return w.VBox([self.comparing, second])

    def second_choice(self) -> Choice:
        return Choice(self.layer.value, self.scheme2.value, float(self.rate2.value), int(self.bits2.value),
                      self.index_format2.value if self.scheme2.value == "irregular" else "auto")

    def refresh_compare(self, *_: object) -> None:
        self.rate2.disabled = self.match.disabled = is_nm(self.scheme2.value)  # a pattern fixes its rate: nothing to match
        if not self.comparing.value:
            return
        try:
            self.compared.value = compare_html(compare.side_by_side(self.session, self.choice(), self.second_choice()))
        except ValueError as exc:
            self.compared.value = f"<span style='color:#c44e52'>{html.escape(str(exc))}</span>"

    def match_accuracy(self, *_: object) -> None:
        """Set the second rate to where the second choice's one-shot accuracy still reaches the first one's."""
        self.status.value = "<i>searching the rate (a dozen one-shot evaluations)...</i>"
        rate, _ = compare.matching_rate(self.session, self.choice(), self.second_choice())
        self.rate2.value = rate  # redraws the comparison
        self.refresh_compare()
        self.status.value = ""

    def _fill_model_panel(self) -> None:
        """The whole-model table of a published model; each layer's name is a button that opens it below."""
        import ipywidgets as w

        table = model_table(self.session)
        if table is None:
            self.model_panel.children = ()
            return
        cells: list[Any] = [w.HTML(f"<b>{html.escape(c)}</b>") for c in ("layer", *MODEL_COLUMNS)]
        for row in table.to_dict("records"):
            if row["layer"] in self.session.layers:
                button = w.Button(description=row["layer"], layout=w.Layout(width="auto"))
                button.add_class(f"explore-open-{row['layer']}")
                button.on_click(lambda _, name=row["layer"]: setattr(self.layer, "value", name))
                cells.append(button)
            else:
                cells.append(w.HTML(f"<b>{html.escape(str(row['layer']))}</b>"))
            for c in MODEL_COLUMNS:
                cell = w.HTML(_cell(row[c]))
                if row["layer"] == "total":
                    cell.add_class(f"explore-total-{MODEL_COLUMNS.index(c)}")
                cells.append(cell)
        grid = w.GridBox(cells, layout=w.Layout(grid_template_columns=f"repeat({1 + len(MODEL_COLUMNS)}, auto)",
                                                 grid_gap="2px 12px"))
        self.model_panel.children = (w.HTML(model_caption(self.session)), grid)

    def choice(self) -> Choice:
        return Choice(self.layer.value, self.scheme.value, float(self.rate.value), int(self.bits.value),
                      self.index_format.value, self.index_bits.value or None)

    def refresh(self, *_: object) -> None:
        if self._quiet:
            return
        irregular = self.scheme.value == "irregular"
        self.index_format.disabled = self.index_bits.disabled = not irregular
        self.rate.disabled = is_nm(self.scheme.value)  # an N:M pattern fixes its rate
        self.status.value = "<i>computing...</i>"
        try:
            view = self.session.view(self.choice())
        except ValueError as exc:  # e.g. a run-length width a format cannot use: say so, keep the last view
            self.status.value = f"<span style='color:#c44e52'>{html.escape(str(exc))}</span>"
            return
        self.summary.value = summary_html(view)
        self.refresh_compare()
        from IPython.display import display

        fig = layer_figure(view)
        with self.figure:
            self.figure.clear_output(wait=True)
            display(fig)
        plt.close(fig)
        self.status.value = ""

    def _model_changed(self, change: dict[str, Any]) -> None:
        """A newly opened model starts from its own scheme, bits and layer rate when it is stored (``starting_point``)."""
        self.status.value = "<i>loading the model...</i>"
        self.session = Explorer(self.candidates[change["new"]], len(self.session.val))
        layer = self.layer.value if self.layer.value in self.session.layers else self.session.largest_layer
        self._quiet = True  # one redraw for all the controls set here, not one per control
        try:
            if tuple(self.layer.options) != tuple(self.session.layers):  # new options reset the browser's choice
                with self.layer.hold_trait_notifications():
                    self.layer.options = list(self.session.layers)
                    self.layer.value = layer
            if self.session.stored is not None:
                start = starting_point(self.session, layer)
                self.scheme.value, self.rate.value, self.bits.value = start["scheme"], start["rate"], start["weight_bits"]
        finally:
            self._quiet = False
        self._fill_model_panel()
        self.refresh()

    def _exercise_panel(self, w: Any) -> Any:
        items = []
        for number, exercise in enumerate(exercises.EXERCISES, 1):
            answer = w.HTML()
            button = w.Button(description="Show the answer", layout=w.Layout(width="160px"))

            def reveal(_: object, exercise: exercises.Exercise = exercise, answer: Any = answer) -> None:
                answer.value = f"<blockquote>{html.escape(exercise.answer(self.session))}</blockquote>"

            button.on_click(reveal)
            text = w.HTML(f"<p><b>Exercise {number}: {html.escape(exercise.title)}.</b> {html.escape(exercise.question)} "
                          f"<i>{html.escape(exercise.look_for)}</i></p>")
            items.append(w.VBox([text, button, answer]))
        return w.VBox([w.HTML("<h3>Exercises</h3>"), *items])


def show(session: Explorer, choice: Choice, interactive: bool = True, show_answers: bool = False,
         params_file: str | Path = "params.yaml", out_root: str | Path = "tmp/explore",
         published_root: str | Path = ".") -> App | None:
    """The page: live controls when ``interactive`` (JupyterLab, Voilà), else the static views."""
    if not interactive:
        show_static(session, choice, show_answers)
        return None
    from IPython.display import display

    app = App(session, choice, find_models(params_file, out_root, published_root))
    display(app.widget)
    return app
