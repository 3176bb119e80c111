"""ipywidgets panels the notebooks show, usable and testable from the kernel.

Every panel derives from :class:`Panel`: it exposes its controls as attributes, a ``run_button`` and a ``run()``
method doing the work, and an ``output`` area where figures and progress bars appear. Calling ``run()`` directly
raises errors like any function; an error raised by a *button click* is printed (with its traceback) into the
panel's output and kept in ``last_error`` -- never swallowed silently. Notebooks click ``run_button`` once so that
executing the notebook also exercises the callback path.
"""

from __future__ import annotations

import traceback

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

from . import data as data_mod
from . import imp, models, plots
from .presets import RunSpec
from .training import TrainConfig

__all__ = ["Panel", "IMPPanel"]


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
