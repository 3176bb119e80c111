"""Chapter 10: layer types of the new architectures, the per-type pruning table, the claims on fixed tables, the
figures, the panel's callback, and domain_masks returning the notebook's own cached tickets."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch

from lth_tutorial import models
from lth_tutorial.chapters import ch10_nlp_rl as ch10
from lth_tutorial.presets import RunSpec
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig

torch.set_num_threads(1)


def tiny_specs(monkeypatch):
    """Shrink the chapter's quick settings to a few iterations (same code paths, seconds instead of a minute)."""
    lm = {label: RunSpec(dataset="pydoc", model=spec.model, rounds=1, fraction=0.5,
                         config=TrainConfig(optimizer="adam", lr=3e-3, batch_size=8, iterations=16, eval_every=16))
          for label, spec in ch10.lm_specs(True).items()}
    agents = {"CartPole-v1": ch10.rl_specs(True)["CartPole-v1"].replace(
        rounds=1, config=TrainConfig(optimizer="adam", lr=3e-3, batch_size=4, iterations=16, eval_every=16))}
    monkeypatch.setattr(ch10, "lm_specs", lambda quick: lm)
    monkeypatch.setattr(ch10, "rl_specs", lambda quick: agents)
    return lm, agents


def test_layer_types_of_the_new_architectures():
    lstm = models.build("lstm_lm", (8,), 40)
    assert ch10.layer_types(lstm) == {"embedding.weight": "embedding", "rnn.weight_ih_l0": "recurrent",
                                      "rnn.weight_hh_l0": "recurrent", "decoder.weight": "output"}
    transformer = ch10.layer_types(models.build("transformer_lm", (8,), 40))
    assert transformer == {"embedding.weight": "embedding", "blocks.0.self_attn.in_proj_weight": "attention",
                           "blocks.0.self_attn.out_proj.weight": "attention", "blocks.0.linear1.weight": "feed-forward",
                           "blocks.0.linear2.weight": "feed-forward", "decoder.weight": "output"}
    agent = ch10.layer_types(models.build("actor_critic_mlp", (4,), 2))
    assert [n for n, t in agent.items() if t == "output"] == ["policy.4.weight", "value.4.weight"]
    assert ch10.layer_types(models.build("lenet_300_100", (40,), 10))["fc.weight"] == "output"


def test_runs_tables_and_domain_masks_share_the_cache(tmp_path, monkeypatch):
    lm, agents = tiny_specs(monkeypatch)
    store = RunStore(tmp_path)
    data = ch10.language_data(lm["LSTM"])
    lm_runs = ch10.lm_tickets(data, lm, seeds=[0, 1], store=store, progress=False)
    rl_runs = ch10.rl_tickets({e: ch10.rl_objective(s) for e, s in agents.items()}, agents, seeds=[0, 1],
                              store=store, progress=False)
    table = ch10.lm_table(lm_runs)
    assert set(table["kind"]) == {"ticket", "reinit", "random"} and (table["test_perplexity"] > 1).all()
    assert len(table) == 2 * 2 * (1 + 3)  # models x seeds x (dense + ticket and two controls)
    rl_rows = ch10.rl_table(rl_runs)
    assert set(rl_rows["kind"]) == {"ticket", "random"} and len(rl_rows) == 2 * (1 + 2)

    model_of = {label: models.build(spec.model, data.input_shape, data.num_classes) for label, spec in lm.items()}
    types = ch10.layer_type_table(lm_runs, model_of)
    sums = types.groupby(["model", "seed", "round"])["share_of_pruned"].sum()
    assert sums.to_numpy() == pytest.approx(1.0)
    mask = lm_runs["LSTM"][0].rounds[1].mask
    row = types[(types["model"] == "LSTM") & (types["seed"] == 0) & (types["layer type"] == "recurrent")].iloc[0]
    kept = int(mask["rnn.weight_ih_l0"].sum() + mask["rnn.weight_hh_l0"].sum())
    assert row["density"] == pytest.approx(kept / (mask["rnn.weight_ih_l0"].numel() * 2))

    entries = sorted(tmp_path.rglob("*.pt"))
    masks = ch10.domain_masks(True, seeds=[0, 1], store=store, progress=False)
    assert sorted(tmp_path.rglob("*.pt")) == entries  # the same cached runs: nothing trained
    assert list(masks) == ["language: LSTM", "language: Transformer", "RL: CartPole-v1"]
    assert masks["language: LSTM"][1] == lm_runs["LSTM"][1].rounds[-1].mask
    assert masks["RL: CartPole-v1"][0] == rl_runs["CartPole-v1"][0].rounds[-1].mask
    domain_models = ch10.domain_models(True)
    for domain, per_seed in masks.items():
        per_seed[0].validate(domain_models[domain])

    fig = ch10.figure_language(table, types)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert ax.get_legend().get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0 + 1  # below
    ch10.figure_rl(rl_rows).canvas.draw()
    matplotlib.pyplot.close("all")

    panel = ch10.TicketPanel(True, store=store)
    panel.run_button.click()
    assert panel.last_error is None and panel.result[0].masks[1] == lm_runs["LSTM"][0].rounds[1].mask
    panel.domain.value = "RL: Acrobot-v1"
    panel.rounds.value = 1
    panel.run()
    assert panel.result[0].settings["dataset"]["env"] == "Acrobot-v1"
    matplotlib.pyplot.close("all")


def fake_lm_table(ticket, random, reinit):
    rows = []
    for seed in range(3):
        for kind, values in (("ticket", ticket), ("random", random), ("reinit", reinit)):
            rows.append({"model": "LSTM", "seed": seed, "round": 2, "density": 0.16, "kind": kind,
                         "test_perplexity": values[seed]})
    return pd.DataFrame(rows)


def fake_types(embedding, recurrent, output):
    rows = []
    for seed in range(3):
        for kind, values in (("embedding", embedding), ("recurrent", recurrent), ("output", output)):
            rows.append({"model": "LSTM", "seed": seed, "round": 2, "layer type": kind, "density": values[seed]})
    return pd.DataFrame(rows)


def test_language_claims_on_fixed_tables():
    found = ch10.lm_claims(fake_lm_table([70, 71, 72], [90, 95, 99], [71.5, 73, 75]),
                           fake_types([0.1, 0.12, 0.09], [0.3, 0.35, 0.4], [0.2, 0.08, 0.3]))
    verdicts = {c.id: c.verdict for c in found}
    assert verdicts == {"lstm_ticket_vs_random": "holds", "lstm_ticket_vs_reinit": "within noise",
                        "lstm_embedding_vs_hidden": "holds", "lstm_embedding_sparsest": "within noise"}
    assert "16 % of the weights" in found[0].statement


def test_rl_claims_on_fixed_tables():
    rows = []
    for seed, (dense, ticket, random) in enumerate([(500, 480, 60), (300, 350, 40), (420, 200, 90)]):
        rows += [{"env": "CartPole-v1", "seed": seed, "round": 0, "density": 1.0, "kind": "ticket", "test_return": dense},
                 {"env": "CartPole-v1", "seed": seed, "round": 3, "density": 0.064, "kind": "ticket",
                  "test_return": ticket},
                 {"env": "CartPole-v1", "seed": seed, "round": 3, "density": 0.064, "kind": "random",
                  "test_return": random}]
    found = {c.id: c.verdict for c in ch10.rl_claims(pd.DataFrame(rows))}
    assert found == {"cartpole_ticket_vs_random": "holds", "cartpole_ticket_vs_dense": "within noise"}


def test_settings():
    quick, full = ch10.lm_specs(True), ch10.lm_specs(False)
    assert {s.model for s in quick.values()} == {"lstm_lm", "transformer_lm"}
    assert {s.model for s in full.values()} == {"lstm_lm_medium", "transformer_lm_wt2"}
    assert set(ch10.rl_specs(False)) == {"CartPole-v1", "Acrobot-v1"}
    for spec in [*quick.values(), *ch10.rl_specs(True).values()]:
        assert 0 < ch10.rewind_to(spec) < spec.config.iterations // 10  # late rewinding: early, but not 0
