"""Chapter 10 (Yu et al. 2019, "Playing the lottery with rewards and multiple languages"): tickets in language
models and in actor-critic agents, found by the same IMP with late rewinding as in vision (survey Fig. 13 A-C).

Settings (:func:`lm_specs`, :func:`rl_specs`), the IMP runs over seeds (:func:`lm_tickets`, :func:`rl_tickets`),
tables of perplexity / return against density, the per-layer-type view of the masks
(:func:`lth_tutorial.mask_similarity.layer_types`, :func:`layer_type_table`), the figures, the claims, :func:`domain_masks` (the tickets chapter 11 compares across
domains) and the chapter's panel.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from torch import nn

from .. import claims, imp, language, models, plots, rl
from ..data import Dataset
from ..mask_similarity import layer_types
from ..masks import Mask
from ..presets import RunSpec
from ..rewinding import make_reset
from ..training import TrainConfig, progress_for
from ..widgets import Panel

__all__ = ["SEEDS", "LM_MODELS", "lm_specs", "rl_specs", "language_data", "rl_objective", "lm_tickets",
           "rl_tickets", "lm_table", "rl_table", "layer_types", "layer_type_table", "figure_language",
           "figure_rl", "lm_claims", "rl_claims", "domain_masks", "domain_models", "TicketPanel", "PAPER"]

SEEDS = (0, 1, 2)
#: chapter label -> (quick architecture, full architecture)
LM_MODELS = {"LSTM": ("lstm_lm", "lstm_lm_medium"), "Transformer": ("transformer_lm", "transformer_lm_wt2")}
PAPER = {
    "transformer_density": 1 / 3,
    "transformer": "paper: Transformer tickets at 1/3 of\nthe weights nearly match the dense model",
    "embedding": "paper: IMP prunes the embeddings most\n(the most over-parameterised layers)",
    "rl": "paper: tickets beat random pruning; the density\nthat still plays well varies across tasks",
}

# --- settings -------------------------------------------------------------------------------------------------


def lm_specs(quick: bool) -> dict[str, RunSpec]:
    """``{"LSTM": RunSpec, "Transformer": RunSpec}``; the dataset field names the corpus, ``rewind_to`` in
    :func:`rewind_to`.

    Quick: the offline ``pydoc`` corpus (:mod:`lth_tutorial.language`; 500-word vocabulary, sequences of 24
    tokens), the quick one-layer models ``lstm_lm`` / ``transformer_lm`` (32 wide), Adam, batch 16, 120
    iterations, 2 global rounds of 60 % (16 % of the weights left), late rewinding (:func:`rewind_to`). Full: WikiText-2 with its whole vocabulary, sequences of 35 tokens
    (word_language_model's bptt), Zaremba et al.'s medium LSTM / word_language_model's Transformer, Adam 1e-3, batch
    20, 30,000 iterations, 10 global rounds of 20 % (Yu et al. prune 20 % per round; 10.7 % left).
    """
    if quick:
        def spec(model, lr):
            return RunSpec(dataset="pydoc", model=model, rounds=2, fraction=0.6, scope="global",
                           config=TrainConfig(optimizer="adam", lr=lr, batch_size=16, iterations=120, eval_every=60),
                           runtime="about 0.5 s per training run on a 2-core CPU (one torch thread)")
        return {"LSTM": spec("lstm_lm", 1e-2), "Transformer": spec("transformer_lm", 3e-3)}
    config = TrainConfig(optimizer="adam", lr=1e-3, batch_size=20, iterations=30_000, eval_every=1_000)
    return {label: RunSpec(dataset="wikitext2", model=full, config=config, rounds=10, fraction=0.2, scope="global",
                           runtime="not measured (meant for a GPU)")
            for label, (_, full) in LM_MODELS.items()}


def rl_specs(quick: bool) -> dict[str, RunSpec]:
    """``{env id: RunSpec}`` of A2C (:class:`lth_tutorial.rl.A2C`, SB3's defaults) with the actor-critic MLP.

    Pruning is layer-wise: the heads start at very different scales (SB3's orthogonal gains 0.01 for the policy
    head, 1 for the value head, sqrt(2) for hidden layers), so a global magnitude ranking would remove the whole
    policy head in the first round -- a property of the initial scale, not of importance.

    Quick: CartPole-v1 only, 8 environments, Adam 3e-3, 320 updates, 3 rounds of 60 % (6.4 % of the weights
    left), 5 evaluation episodes. Full: CartPole-v1 and Acrobot-v1, Adam 7e-4 (SB3's rate), 12,500 updates
    (rl-zoo's 500,000 CartPole steps at 8 x 5 per update), 10 rounds of 20 %, 20 evaluation episodes.
    """
    if quick:
        config = TrainConfig(optimizer="adam", lr=3e-3, batch_size=8, iterations=320, eval_every=320)
        return {"CartPole-v1": RunSpec(dataset="CartPole-v1", model="actor_critic_mlp", config=config, rounds=3,
                                       fraction=0.6, scope="layer",
                                       runtime="about 4 s per round (all seeds) on a 2-core CPU")}
    config = TrainConfig(optimizer="adam", lr=7e-4, batch_size=8, iterations=12_500, eval_every=500)
    return {env: RunSpec(dataset=env, model="actor_critic_mlp", config=config, rounds=10, fraction=0.2,
                         scope="layer", runtime="not measured") for env in ("CartPole-v1", "Acrobot-v1")}


def rewind_to(spec: RunSpec) -> int:
    """Late rewinding's iteration: 1/16 of training (7 of 120 quick LM iterations, 20 of 320 quick A2C updates;
    1,875 and 781 in full mode). Yu et al. rewind to an early iteration of training rather than to 0."""
    return spec.config.iterations // 16


def language_data(spec: RunSpec, device="cpu", seed: int = 0, root=None) -> Dataset:
    """The corpus of ``spec`` as a next-token Dataset (quick: 500 words, length 24, 200 validation and test
    sequences; full: WikiText-2, whole vocabulary, length 35)."""
    if spec.dataset == "pydoc":
        return language.load("pydoc", seq_len=24, vocab_size=500, seed=seed, device=device, max_eval=200)
    return language.load(spec.dataset, seq_len=35, vocab_size=None, root=root, device=device)


def rl_objective(spec: RunSpec, device="cpu") -> rl.A2C:
    """The A2C objective of ``spec`` (5 evaluation episodes in quick mode, 20 in full mode)."""
    return rl.A2C(spec.dataset, eval_episodes=5 if spec.config.iterations < 1_000 else 20, device=device)


# --- runs -----------------------------------------------------------------------------------------------------


def _run(task, spec: RunSpec, seeds, controls, store, progress) -> list[imp.IMPResult]:
    return imp.run_seeds(task, spec.model, spec.config, list(seeds), rounds=spec.rounds, fraction=spec.fraction,
                         scope=spec.scope, reset=make_reset("rewind", rewind_to=rewind_to(spec)), controls=controls,
                         store=store, progress=progress)


def lm_tickets(data: Dataset, specs: dict[str, RunSpec], seeds: Sequence[int] = SEEDS, store=None,
               progress=True) -> dict[str, list[imp.IMPResult]]:
    """IMP with late rewinding and both controls (random re-init, random pruning) for each language model, one
    :class:`~lth_tutorial.imp.IMPResult` per seed; one progress bar for all of it."""
    with progress_for(progress, "IMP on language models") as bar:
        return {label: _run(data, spec, seeds, ("reinit", "random"), store, bar) for label, spec in specs.items()}


def rl_tickets(objectives: dict[str, rl.A2C], specs: dict[str, RunSpec], seeds: Sequence[int] = SEEDS,
               store=None, progress=True) -> dict[str, list[imp.IMPResult]]:
    """IMP with late rewinding and the random-pruning control for A2C on each task (round 0 is the dense agent)."""
    with progress_for(progress, "IMP on A2C agents") as bar:
        return {env: _run(objectives[env], spec, seeds, ("random",), store, bar) for env, spec in specs.items()}


def _rows(results: dict[str, list[imp.IMPResult]], column: str, metric: str, transform) -> pd.DataFrame:
    rows = []
    for label, runs in results.items():
        for run in runs:
            seed = run.settings["seed"]
            for r in run.rounds:
                for kind, res in [("ticket", r.ticket), *r.controls.items()]:
                    rows.append({column: label, "seed": seed, "round": r.round, "density": r.density, "kind": kind,
                                 metric: transform(res.at_best(metric.replace("perplexity", "loss")))})
    return pd.DataFrame(rows)


def lm_table(results: dict[str, list[imp.IMPResult]]) -> pd.DataFrame:
    """One row per model, seed, round and kind: density and test perplexity at the early-stopping iteration
    (chosen on validation loss)."""
    return _rows(results, "model", "test_perplexity", language.perplexity)


def rl_table(results: dict[str, list[imp.IMPResult]]) -> pd.DataFrame:
    """One row per task, seed, round and kind: density and mean test return at the early-stopping evaluation
    (chosen on the validation episodes)."""
    return _rows(results, "env", "test_return", float)


def per_seed(table: pd.DataFrame, metric: str, kind: str, round_index: int, **where) -> np.ndarray:
    """``metric`` of ``kind`` at ``round_index`` for each seed (sorted by seed), rows filtered by ``where``."""
    rows = table[(table["kind"] == kind) & (table["round"] == round_index)]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows.sort_values("seed")[metric].to_numpy()


# --- layer types ----------------------------------------------------------------------------------------------

LAYER_TYPES = ("embedding", "recurrent", "attention", "feed-forward", "output")


def layer_type_table(results: dict[str, list[imp.IMPResult]], model_of: dict[str, nn.Module]) -> pd.DataFrame:
    """One row per model, seed, round (>= 1) and layer type: the type's ``weights``, its ``density`` and its
    ``share_of_pruned`` (the fraction of all pruned weights that belong to this type; shares sum to 1 per round)."""
    rows = []
    for label, runs in results.items():
        types = layer_types(model_of[label])
        for run in runs:
            for r in run.rounds[1:]:
                pruned_total = r.mask.num_total - r.mask.num_kept
                for kind in LAYER_TYPES:
                    names = [n for n, t in types.items() if t == kind]
                    if not names:
                        continue
                    total = sum(r.mask[n].numel() for n in names)
                    kept = sum(int(r.mask[n].sum()) for n in names)
                    rows.append({"model": label, "seed": run.settings["seed"], "round": r.round,
                                 "overall density": r.density, "layer type": kind, "weights": total,
                                 "density": kept / total, "share_of_pruned": (total - kept) / max(pruned_total, 1)})
    return pd.DataFrame(rows)


# --- figures and claims ---------------------------------------------------------------------------------------


def _lines(ax, table: pd.DataFrame, metric: str, kinds: Sequence[str], scale: float = 1.0) -> None:
    for kind in kinds:
        rows = table[table["kind"] == kind]
        if rows.empty:
            continue
        if kind != "ticket":  # controls start at round 1; draw them from the dense point like the ticket
            rows = pd.concat([table[(table["kind"] == "ticket") & (table["round"] == 0)].assign(kind=kind), rows])
        agg = rows.groupby("round").agg(density=("density", "mean"), mean=(metric, "mean"), low=(metric, "min"),
                                        high=(metric, "max"))
        style = dict(plots.KIND_STYLE.get(kind, {"label": kind}))
        if kind == "ticket":
            style["label"] = "ticket (IMP, late rewinding)"
        ax.errorbar(agg["density"] * 100, agg["mean"] * scale,
                    yerr=np.vstack([agg["mean"] - agg["low"], agg["high"] - agg["mean"]]) * scale, capsize=3, lw=1.6,
                    ms=4, **style)
    plots.density_axis(ax)
    ax.grid(alpha=0.3)


def figure_language(table: pd.DataFrame, types: pd.DataFrame):
    """Fig. 13 A/B in our setting: test perplexity against weights remaining for each language model (ticket,
    random re-init, random pruning; min-max over seeds), and each layer type's density per round (mean over
    seeds), with the paper's statements drawn beside ours."""
    labels = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(labels) + 1, figsize=(5.5 * (len(labels) + 1), 6.2), layout="constrained")
    for ax, label in zip(axes, labels):
        _lines(ax, table[table["model"] == label], "test_perplexity", ("ticket", "reinit", "random"))
        ax.set_ylabel("test perplexity (lower is better)")
        ax.set_title(f"{label} language model")
        if label == "Transformer":
            plots.paper_reference(ax, 100 * PAPER["transformer_density"], PAPER["transformer"], axis="x")
        _legend_below(ax)
    ax = axes[-1]
    mean = types.groupby(["model", "layer type", "round"], sort=False).agg(overall=("overall density", "mean"),
                                                                           density=("density", "mean"))
    for (label, kind), rows in mean.groupby(level=[0, 1], sort=False):  # from the dense network (100 %, 100 %)
        ax.plot([100, *(rows["overall"] * 100)], [100, *(rows["density"] * 100)], marker="o",
                ls="-" if label == "LSTM" else "--", label=f"{label}: {kind}")
    low = 100 * types["overall density"].min()
    ax.plot([100, low], [100, low], color="0.6", lw=1, label="as dense as the whole network")
    plots.density_axis(ax)
    ax.set_yscale("log")
    ax.set_ylabel("layer type's weights remaining (%)")
    ax.set_title("which layers does IMP prune?")
    ax.plot([], [], ls=":", color="0.35", label=PAPER["embedding"])
    ax.grid(alpha=0.3)
    _legend_below(ax, ncol=2)
    return fig


def _legend_below(ax, ncol: int = 1) -> None:
    """The legend under the axes, outside the data (room for long labels in a row of panels)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, ncol=ncol, frameon=False)


def figure_rl(table: pd.DataFrame):
    """Fig. 13 C in our setting: mean test return against weights remaining per task (ticket, random pruning;
    min-max over seeds) with the dense agents' range as a band and the paper's statement beside ours."""
    envs = list(dict.fromkeys(table["env"]))
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 5.4), layout="constrained", squeeze=False)
    for ax, env in zip(axes[0], envs):
        rows = table[table["env"] == env]
        dense = rows[rows["round"] == 0]["test_return"]
        ax.axhspan(dense.min(), dense.max(), color="0.85", label="dense agents (min-max over seeds)")
        _lines(ax, rows, "test_return", ("ticket", "random"))
        ax.set_ylabel("mean test return (greedy episodes)")
        ax.set_title(f"A2C on {env}")
        ax.plot([], [], ls=":", color="0.35", label=PAPER["rl"])
        _legend_below(ax)
    return fig


def _sparsest(table: pd.DataFrame, column: str, label: str, metric: str):
    """``(rows of label, sparsest round, its mean density, the ticket's metric per seed there)``."""
    rows = table[table[column] == label]
    last = int(rows["round"].max())
    return rows, last, rows[rows["round"] == last]["density"].mean(), per_seed(rows, metric, "ticket", last)


def lm_claims(table: pd.DataFrame, types: pd.DataFrame) -> list[claims.Claim]:
    """Per language model, at the sparsest round: the ticket's perplexity below random pruning's and below random
    re-init's for every seed; whether the embedding ends sparser than every hidden layer type (recurrent,
    attention, feed-forward), and sparser than every other type (the output layer included)."""
    out = []
    for label in dict.fromkeys(table["model"]):
        rows, last, density, ticket = _sparsest(table, "model", label, "test_perplexity")
        for kind, words in (("random", "random pruning"), ("reinit", "random re-initialisation")):
            out.append(claims.compare(f"{label.lower()}_ticket_vs_{kind}",
                                      f"{label}: the ticket's test perplexity is below {words}'s at "
                                      f"{100 * density:.3g} % of the weights", ticket,
                                      per_seed(rows, "test_perplexity", kind, last), names=("ticket", kind),
                                      scale=1.0, unit="", higher_is_better=False))
        t = types[(types["model"] == label) & (types["round"] == last)]
        embedding = t[t["layer type"] == "embedding"].sort_values("seed")["density"].to_numpy()
        hidden = t[~t["layer type"].isin(["embedding", "output"])].groupby("seed")["density"].min().sort_index()
        others = t[t["layer type"] != "embedding"].groupby("seed")["density"].min().sort_index()
        out.append(claims.compare(f"{label.lower()}_embedding_vs_hidden",
                                  f"{label}: IMP leaves the embedding sparser than every hidden layer type",
                                  embedding, hidden.to_numpy(), names=("embedding", "sparsest hidden type"),
                                  higher_is_better=False))
        out.append(claims.compare(f"{label.lower()}_embedding_sparsest",
                                  f"{label}: IMP leaves the embedding sparser than every other layer type, "
                                  f"the output layer included", embedding, others.to_numpy(),
                                  names=("embedding", "sparsest other type"), higher_is_better=False))
    return out


def rl_claims(table: pd.DataFrame) -> list[claims.Claim]:
    """Per task, at the sparsest round: the ticket's mean test return above random pruning's for every seed; and
    whether it is above the dense agent's."""
    out = []
    for env in dict.fromkeys(table["env"]):
        rows, last, density, ticket = _sparsest(table, "env", env, "test_return")
        short = env.split("-")[0].lower()
        out.append(claims.compare(f"{short}_ticket_vs_random",
                                  f"{env}: the ticket's return is above random pruning's at {100 * density:.3g} % "
                                  f"of the weights", ticket, per_seed(rows, "test_return", "random", last),
                                  names=("ticket", "random pruning"), scale=1.0, unit=""))
        out.append(claims.compare(f"{short}_ticket_vs_dense",
                                  f"{env}: the ticket at {100 * density:.3g} % of the weights returns more than "
                                  f"the dense agent", ticket, per_seed(rows, "test_return", "ticket", 0),
                                  names=("ticket", "dense"), scale=1.0, unit=""))
    return out


# --- chapter 11's view: one ticket mask per seed and domain ----------------------------------------------------


def domain_models(quick: bool) -> dict[str, nn.Module]:
    """One model per domain of :func:`domain_masks` (seed 0), for parameter names and :func:`layer_types`."""
    lm, agents = lm_specs(quick), rl_specs(quick)
    data = language_data(next(iter(lm.values())))
    out = {f"language: {label}": models.build(spec.model, data.input_shape, data.num_classes, seed=0)
           for label, spec in lm.items()}
    out.update({f"RL: {env}": rl_objective(spec).build(spec.model, 0) for env, spec in agents.items()})
    return out


def domain_masks(quick: bool, seeds: Sequence[int] = SEEDS, store=None, progress=True) -> dict[str, list[Mask]]:
    """The ticket masks of the sparsest round, one per seed, for each domain of this chapter: ``"language: LSTM"``,
    ``"language: Transformer"`` and ``"RL: <env>"`` -- from the same cached IMP runs as the notebook (same settings,
    same run store), so after the notebook has run this only loads. :func:`domain_models` gives a model per domain
    (parameter names and layer types)."""
    lm, agents = lm_specs(quick), rl_specs(quick)
    with progress_for(progress, "chapter 10 tickets") as bar:
        data = language_data(next(iter(lm.values())))
        lm_runs = lm_tickets(data, lm, seeds, store, bar)
        rl_runs = rl_tickets({env: rl_objective(spec) for env, spec in agents.items()}, agents, seeds, store, bar)
    out = {f"language: {label}": [run.rounds[-1].mask for run in runs] for label, runs in lm_runs.items()}
    out.update({f"RL: {env}": [run.rounds[-1].mask for run in runs] for env, runs in rl_runs.items()})
    return out


# --- panel ----------------------------------------------------------------------------------------------------


class TicketPanel(Panel):
    """Pick a domain (a language model or an A2C task), a seed, the number of rounds and the per-round fraction;
    run IMP with late rewinding and its controls for that one seed through the run store and draw perplexity or
    return against density. With the notebook's settings it loads the notebook's own runs."""

    title = "Tickets beyond vision: one IMP run"

    def __init__(self, quick: bool, device="cpu", store=None):
        import ipywidgets as W

        super().__init__()
        self.quick, self.device, self.store = quick, device, store
        self.lm, self.agents = lm_specs(quick), rl_specs(quick)
        options = [f"language: {k}" for k in self.lm] + [f"RL: {k}" for k in self.agents]
        if quick:
            options.append("RL: Acrobot-v1")
        self.domain = W.Dropdown(options=options, value=options[0], description="domain")
        first = self.lm["LSTM"]
        self.seed = W.BoundedIntText(value=0, min=0, max=99, description="seed")
        self.rounds = W.IntSlider(value=first.rounds, min=1, max=first.rounds + 3, description="rounds")
        self.fraction = W.FloatSlider(value=first.fraction, min=0.2, max=0.8, step=0.1, description="fraction")
        self.controls = [self.domain, self.seed, self.rounds, self.fraction]
        self.result = None

    def run(self):
        kind, _, name = self.domain.value.partition(": ")
        if kind == "language":
            spec = self.lm[name]
            task, controls, metric = language_data(spec, self.device), ("reinit", "random"), "test_perplexity"
        else:
            spec = self.agents.get(name) or self.agents["CartPole-v1"].replace(dataset=name)
            task, controls, metric = rl_objective(spec, self.device), ("random",), "test_return"
        spec = spec.replace(rounds=self.rounds.value, fraction=self.fraction.value)
        self.status.value = f"running IMP on {self.domain.value} ..."
        self.output.clear_output(wait=True)
        with self.output:
            self.result = _run(task, spec, [self.seed.value], controls, self.store, True)
            table = (lm_table if kind == "language" else rl_table)({name: self.result})
            fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
            _lines(ax, table, metric, ("ticket", *controls))
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_title(f"{self.domain.value}, seed {self.seed.value}")
            plots.legend_outside(ax, fontsize=8)
            plt.show()
        self.status.value = f"done: {self.domain.value}"
