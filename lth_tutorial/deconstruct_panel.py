"""The chapter-04 widget: pick a mask criterion, a rewinding variant, what pruned weights do and a density; see the
ticket's test accuracy before and after training, beside the dense network.

Follows :class:`lth_tutorial.widgets.Panel`: ``run()`` raises like any function, a click's error is printed into
the panel's output and kept in ``last_error``.
"""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt

from . import criteria
from . import rewind_variants
from .data import Dataset
from .deconstruct import PRUNED_ACTIONS, Dense, ticket_run
from .training import TrainConfig
from .widgets import Panel

__all__ = ["TicketPanel"]


class TicketPanel(Panel):
    """Build and train one ticket of Zhou et al.'s design space.

    Args:
        dense: the dense run (:func:`lth_tutorial.deconstruct.dense_run`) the ticket is cut from.
        data: its dataset.
        config: training config of the ticket (normally the dense run's).
        store: run store (a setting already trained loads instantly).
    """

    title = "Deconstruct a ticket: mask criterion x rewinding variant x pruned weights x density"

    def __init__(self, dense: Dense, data: Dataset, config: TrainConfig, store=None):
        super().__init__()
        self.dense, self.data, self.config, self.store = dense, data, config, store
        self.criterion = W.Dropdown(options=criteria.names(), value="large_final", description="criterion")
        self.variant = W.Dropdown(options=rewind_variants.names(), value="original", description="kept start")
        self.pruned = W.ToggleButtons(options=PRUNED_ACTIONS, value="zero", description="pruned")
        self.density = W.FloatLogSlider(value=0.2, base=10, min=-2, max=0, step=0.1, description="density",
                                        readout_format=".3f")
        self.controls = [self.criterion, self.variant, self.pruned, self.density]
        self.rows: list[dict] = []
        self.figure = None

    def run(self) -> dict:
        """Train the selected ticket, append its row to ``rows`` and redraw the comparison of all rows so far."""
        self.status.value = "training..."
        with self.output:
            row = ticket_run(self.dense, self.data, self.config, criterion=self.criterion.value,
                             density=self.density.value, variant=self.variant.value, pruned=self.pruned.value,
                             store=self.store, progress=True)
        self.rows.append(row)
        self.output.clear_output(wait=True)
        with self.output:
            self.figure = self._draw()
            plt.show()
        self.status.value = (f"{row['criterion']} / {row['variant']} / pruned {row['pruned']} at "
                             f"{row['density']:.1%} kept: {100 * row['before']:.1f} % before, "
                             f"{100 * row['after']:.1f} % after training")
        return row

    def _draw(self):
        rows = self.rows[-8:]
        labels = [f"{r['criterion']}\n{r['variant']}, {r['pruned']}\n{r['density']:.1%}" for r in rows]
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows) + 2), 3.6))
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [100 * r["before"] for r in rows], 0.4, label="before training", color="0.7")
        ax.bar([i + 0.2 for i in x], [100 * r["after"] for r in rows], 0.4, label="after training",
               color="tab:blue")
        ax.axhline(100 * self.dense.result.best_test_accuracy, color="black", ls="--", lw=1,
                   label="dense, trained")
        ax.axhline(100 / self.data.num_classes, color="gray", ls=":", lw=1, label="chance")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return fig
