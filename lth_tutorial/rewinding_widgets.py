"""The widget of the rewinding chapters: pick a reset strategy, its k or its fine-tuning budget, and compare its IMP
curves with the ones already computed (accuracy against density, and against search cost).

Built on :class:`lth_tutorial.widgets.Panel`: ``run()`` raises like any function; a failing button click prints its
traceback into the panel's output and keeps it in ``last_error``.
"""

from __future__ import annotations

from typing import Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd

from . import rewinding
from .data import Dataset
from .presets import RunSpec
from .resets import make_reset
from .widgets import Panel

__all__ = ["StrategyPanel"]


class StrategyPanel(Panel):
    """Run IMP with one more reset strategy and draw it beside reference curves.

    Args:
        data: the dataset the reference curves were trained on.
        spec: model, training config, rounds and fraction of the reference runs.
        reference: :func:`lth_tutorial.rewinding.results_table` of the curves computed so far.
        rule: the matching rule (dense accuracy and spread over seeds).
        snapshots: the dense-run snapshots the reference runs shared; the rewinding points offered are these, so the
            dense run is loaded from the store, never retrained.
        seed: seed of the IMP run (the one the reference curves used).
        store: run store (finished runs load instantly).
    """

    title = "Reset strategies compared: pick one, press Run"

    def __init__(self, data: Dataset, spec: RunSpec, reference: pd.DataFrame, rule: rewinding.Matching,
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
            return make_reset(name, iteration=self.k.value)
        if name == "finetune":
            return make_reset(name, iterations=self.finetune_iterations.value)
        return make_reset(name)

    def run(self) -> pd.DataFrame:
        """Run IMP with the chosen strategy (through the store) and redraw both figures; returns the table drawn."""
        reset = self.reset()
        self.status.value = f"running {rewinding.label(reset)}..."
        with self.output:
            result = rewinding.compare(self.data, self.spec.model, self.spec.config, [reset],
                                       rounds=self.rounds.value, fraction=self.spec.fraction, scope=self.spec.scope,
                                       output_fraction=self.spec.output_fraction, seed=self.seed,
                                       snapshot_at=self.snapshots, store=self.store)
        new = rewinding.results_table(result)
        new["strategy"] = new["strategy"] + " (yours)"
        shown = self.reference[self.reference["strategy"].isin(self.shown.value)]
        self.table = pd.concat([shown, new], ignore_index=True)
        self.output.clear_output(wait=True)
        with self.output:
            self.figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
            rewinding.plot_accuracy_vs_density(self.table, self.rule, ax=left)
            rewinding.plot_accuracy_vs_cost(self.table, self.rule, ax=right)
            self.figure.tight_layout()
            plt.show()
        summary = rewinding.matching_summary(new, self.rule).iloc[0]
        smallest = summary["smallest matching density"]
        self.status.value = (f"{rewinding.label(reset)}: "
                             + ("never matches" if smallest != smallest else
                                f"matches down to {100 * smallest:.3g} % of the weights after "
                                f"{summary['iterations to reach it']:,.0f} training iterations"))
        return self.table
