"""ipywidgets panels the notebooks show, usable and testable from the kernel.

Every panel derives from :class:`Panel`: it exposes its controls as attributes, a ``run_button`` and a ``run()``
method doing the work, and an ``output`` area where figures and progress bars appear. Calling ``run()`` directly
raises errors like any function; an error raised by a *button click* is printed (with its traceback) into the
panel's output and kept in ``last_error`` -- never swallowed silently. Notebooks click ``run_button`` once so that
executing the notebook also exercises the callback path.

Panels here serve several chapters (:class:`IMPPanel`: chapter 01; :class:`StrategyPanel`: chapters 02-03); a panel
only one chapter uses lives in that chapter's module under :mod:`lth_tutorial.chapters`.
"""

from __future__ import annotations

import traceback

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

from typing import Sequence

import pandas as pd

from . import data as data_mod
from . import imp, models, plots, rewinding, tables
from .data import Dataset
from .presets import RunSpec
from .rewinding import make_reset
from .training import TrainConfig

__all__ = ["Panel", "IMPPanel", "StrategyPanel"]


class Panel:
    """Base class: ``controls`` (a list of widgets) + a Run button + an output area.

    Subclasses set ``self.controls`` and implement :meth:`run`.
    """

    title = "panel"

    def __init__(self):
        self.controls: list[W.Widget] = []
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.run_button.on_click(self._on_click)
        self.output = W.Output()
        self.status = W.HTML()
        self.last_error: str | None = None

    def run(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_click(self, _button) -> None:
        self.run_button.disabled = True
        self.last_error = None
        try:
            self.run()
        except Exception:
            self.last_error = traceback.format_exc()
            self.status.value = "<b style='color:#b00'>failed: see the traceback below</b>"
            with self.output:
                print(self.last_error)
        finally:
            self.run_button.disabled = False

    def widget(self) -> W.Widget:
        return W.VBox([W.HTML(f"<b>{self.title}</b>"), W.HBox([W.VBox(self.controls[: (len(self.controls) + 1) // 2]),
                                                              W.VBox(self.controls[(len(self.controls) + 1) // 2:])]),
                       W.HBox([self.run_button, self.status]), self.output])

    def _ipython_display_(self):
        display(self.widget())


class IMPPanel(Panel):
    """Choose dataset, model, rounds, fraction, scope and seeds; run IMP (with both controls) and redraw
    Frankle & Carbin's figure.

    Args:
        spec: the starting values (e.g. ``presets.get("lenet_mnist").quick``).
        device: where to train.
        store: run store (finished runs load instantly when run again).
    """

    title = "Iterative magnitude pruning"

    def __init__(self, spec: RunSpec, device="cpu", store=None):
        super().__init__()
        self.spec, self.device, self.store = spec, device, store
        self.dataset = W.Dropdown(options=data_mod.names(), value=spec.dataset, description="dataset")
        self.model = W.Dropdown(options=models.names(), value=spec.model, description="model")
        self.rounds = W.IntSlider(value=spec.rounds, min=0, max=25, description="rounds")
        self.fraction = W.FloatSlider(value=spec.fraction, min=0.05, max=0.9, step=0.05, description="fraction",
                                      readout_format=".2f")
        self.scope = W.ToggleButtons(options=["global", "layer"], value=spec.scope, description="scope")
        self.seeds = W.IntSlider(value=1, min=1, max=5, description="seeds")
        self.iterations = W.IntText(value=spec.config.iterations, description="iterations")
        self.controls_box = W.SelectMultiple(options=imp.CONTROLS, value=imp.CONTROLS, description="controls",
                                             rows=2)
        self.controls = [self.dataset, self.model, self.rounds, self.fraction, self.scope, self.seeds,
                         self.iterations, self.controls_box]
        self.results: list[imp.IMPResult] = []
        self.figure = None

    def config(self) -> TrainConfig:
        iterations = int(self.iterations.value)
        eval_every = max(1, iterations // 10)
        return self.spec.config.replace(iterations=iterations, eval_every=eval_every)

    def run(self) -> list[imp.IMPResult]:
        """Run IMP for every seed with the current settings, then draw the figure into the output area."""
        data = data_mod.load(self.dataset.value, device=self.device)
        self.output.clear_output()
        self.results = []
        with self.output:
            for seed in range(self.seeds.value):
                self.status.value = f"running seed {seed + 1} of {self.seeds.value}..."
                self.results.append(imp.run(
                    data, self.model.value, self.config(), rounds=self.rounds.value, fraction=self.fraction.value,
                    scope=self.scope.value, output_fraction=self.spec.output_fraction,
                    controls=self.controls_box.value, seed=seed, store=self.store, progress=True))
            self.output.clear_output(wait=True)
            self.figure = plots.imp_figure(self.results, title=f"{self.model.value} on {self.dataset.value}")
            plt.show()
        self.status.value = f"done: {len(self.results)} seed(s), {self.rounds.value} rounds"
        return self.results


class StrategyPanel(Panel):
    """Run IMP with one more reset strategy and draw it beside reference curves.

    Args:
        data: the dataset the reference curves were trained on.
        spec: model, training config, rounds and fraction of the reference runs.
        reference: :func:`lth_tutorial.tables.strategy_table` of the curves computed so far.
        rule: the matching rule (dense accuracy and spread over seeds).
        snapshots: the dense-run snapshots the reference runs shared; the rewinding points offered are these, so the
            dense run is loaded from the store, never retrained.
        seed: seed of the IMP run (the one the reference curves used).
        store: run store (finished runs load instantly).
    """

    title = "Reset strategies compared: pick one, press Run"

    def __init__(self, data: Dataset, spec: RunSpec, reference: pd.DataFrame, rule: tables.Matching,
                 snapshots: Sequence[int], seed: int = 0, store=None):
        super().__init__()
        self.data, self.spec, self.reference, self.rule, self.seed, self.store = data, spec, reference, rule, seed, store
        self.snapshots = tuple(sorted({int(k) for k in snapshots}))
        total = spec.config.iterations
        self.strategy = W.Dropdown(options=["rewind", "lr_rewind", "finetune", "init"], value="rewind",
                                   description="strategy")
        self.k = W.SelectionSlider(options=list(self.snapshots), value=self.snapshots[min(1, len(self.snapshots) - 1)],
                                   description="k (rewind)")
        self.finetune_iterations = W.IntSlider(value=total // 4, min=max(1, total // 20), max=2 * total,
                                               step=max(1, total // 20), description="finetune n")
        self.rounds = W.IntSlider(value=spec.rounds, min=1, max=2 * spec.rounds, description="rounds")
        names = list(dict.fromkeys(reference["strategy"]))
        self.shown = W.SelectMultiple(options=names, value=tuple(names), rows=min(6, len(names)),
                                      description="compare with")
        self.controls = [self.strategy, self.k, self.finetune_iterations, self.rounds, self.shown]
        self.table: pd.DataFrame | None = None
        self.figure = None

    def reset(self):
        """The reset strategy the controls describe."""
        name = self.strategy.value
        if name in ("rewind", "lr_rewind"):
            return make_reset(name, rewind_to=self.k.value)
        if name == "finetune":
            return make_reset(name, finetune_steps=self.finetune_iterations.value)
        return make_reset(name)

    def run(self) -> pd.DataFrame:
        """Run IMP with the chosen strategy (through the store) and redraw both figures; returns the table drawn."""
        reset = self.reset()
        self.status.value = f"running {rewinding.label(reset)}..."
        with self.output:
            result = imp.compare_resets(self.data, self.spec.model, self.spec.config, [reset],
                                        rounds=self.rounds.value, fraction=self.spec.fraction, scope=self.spec.scope,
                                        output_fraction=self.spec.output_fraction, seed=self.seed,
                                        snapshot_at=self.snapshots, store=self.store, progress=True)
        new = tables.strategy_table(result)
        new["strategy"] = new["strategy"] + " (yours)"
        mine = rewinding.label(reset)
        shown = self.reference[self.reference["strategy"].isin(self.shown.value)
                               & (self.reference["strategy"] != mine)]  # never draw the same curve twice
        self.table = pd.concat([shown, new], ignore_index=True)
        self.output.clear_output(wait=True)
        with self.output:
            self.figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
            plots.strategies_vs_density(self.table, self.rule, ax=left)
            plots.strategies_vs_cost(self.table, self.rule, ax=right)
            self.figure.tight_layout()
            plt.show()
        summary = tables.matching_summary(new, self.rule).iloc[0]
        smallest = summary["smallest matching density"]
        self.status.value = (f"{rewinding.label(reset)}: "
                             + ("never matches" if smallest != smallest else
                                f"matches down to {100 * smallest:.3g} % of the weights after "
                                f"{summary['iterations to reach it']:,.0f} training iterations"))
        return self.table
