"""IMP beyond classification: sequence layers in masks, token targets, and any Objective through imp.run."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lth_tutorial import cost, imp, scores
from lth_tutorial.data import Dataset
from lth_tutorial.masks import Mask, from_torch_prune, prunable_parameters, prune, random_mask_like, to_torch_prune
from lth_tutorial.models import reinitialize
from lth_tutorial.objectives import Objective, Supervised, as_objective, evaluate_members
from lth_tutorial.store import RunStore
from lth_tutorial.training import DivergenceError, TrainConfig, train

torch.set_num_threads(1)
VOCAB, LENGTH = 17, 6


class TinyLSTM(nn.Module):
    """Embedding -> 2-layer LSTM -> Linear, logits (B, L, V)."""

    def __init__(self, vocab=VOCAB, width=8):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.rnn = nn.LSTM(width, width, num_layers=2, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.head(self.rnn(self.embedding(tokens))[0])


class TinyTransformer(nn.Module):
    """Embedding -> one causal encoder layer (attention + feed-forward + layer norms) -> Linear."""

    def __init__(self, vocab=VOCAB, width=8):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.block = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        causal = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        return self.head(self.block(self.embedding(tokens), src_mask=causal, is_causal=True))


def token_dataset(seed=0, n=64) -> Dataset:
    """Sequences whose next token is the current one plus one (mod VOCAB): learnable, (N, L) int64."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (3 * n, 1), generator=g)
    seq = (start + torch.arange(LENGTH + 1)) % VOCAB
    x, y = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    return Dataset("tokens", x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:], VOCAB, (LENGTH,),
                   spec={"name": "tokens", "seed": seed})


def built(cls, seed=0):
    model = cls()
    reinitialize(model, "glorot", torch.Generator().manual_seed(seed))
    return model


def test_sequence_layers_are_prunable_and_biases_norms_are_not():
    lstm = prunable_parameters(built(TinyLSTM))
    assert list(lstm) == ["embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l1",
                          "rnn.weight_hh_l1", "head.weight"]
    trans = prunable_parameters(built(TinyTransformer))
    assert list(trans) == ["embedding.weight", "block.self_attn.in_proj_weight", "block.self_attn.out_proj.weight",
                           "block.linear1.weight", "block.linear2.weight", "head.weight"]
    assert list(prunable_parameters(built(TinyLSTM), layers=["rnn"])) == [n for n in lstm if n.startswith("rnn.")]
    assert list(Mask.ones(built(TinyLSTM), layers="rnn.weight_hh_l1")) == ["rnn.weight_hh_l1"]


def test_naming_a_layer_that_cannot_be_pruned_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'block.norm1' is a LayerNorm, which has no prunable weights.*Embedding"):
        Mask.ones(built(TinyTransformer), layers=["block.norm1"])
    with pytest.raises(ValueError, match="names no prunable layer.*rnn.weight_hh_l0"):
        prunable_parameters(built(TinyLSTM), layers=["rnn.bias_hh_l0"])


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_global_and_layer_pruning_of_sequence_layers(scope):
    model = built(TinyLSTM)
    weights = {n: p.detach() for n, p in prunable_parameters(model).items()}
    mask = prune(scores.magnitude(weights), 0.5, scope=scope)
    if scope == "global":
        total = sum(w.numel() for w in weights.values())
        assert mask.num_kept == total - round(0.5 * total)
        assert len(set(mask.layer_densities().values())) > 1  # ranked together: layers end at different densities
    else:
        for n, w in weights.items():
            assert int(mask[n].sum()) == w.numel() - round(0.5 * w.numel())
    nested = prune(scores.magnitude(weights), 0.5, mask, scope=scope)
    assert nested.is_subset_of(mask)


@pytest.mark.parametrize("cls", [TinyLSTM, TinyTransformer])
def test_pruned_sequence_weights_stay_zero_through_training(cls):
    data = token_dataset()
    model = built(cls, seed=1)
    mask = random_mask_like(prune(scores.magnitude(model), 0.6), torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = TrainConfig(optimizer="adam", lr=1e-2, weight_decay=1e-3, batch_size=16, iterations=40, eval_every=20)
    train(model, data, config, mask=mask, seed=0, progress=False)
    params = dict(model.named_parameters())
    for name, kept in mask.items():
        assert torch.all(params[name][~kept] == 0), name  # exactly zero, recurrent weights included
        assert not torch.equal(params[name][kept], before[name][kept]), name  # the kept ones trained
    assert any("weight_hh" in n for n in mask) or any("in_proj" in n for n in mask)


def test_torch_prune_interop_on_lstm_and_attention():
    tokens = token_dataset().x_test[:4]
    for cls in (TinyLSTM, TinyTransformer):
        model = built(cls, seed=2).eval()
        mask = prune(scores.magnitude(model), 0.5)
        by_hand = mask.apply(built(cls, seed=2)).eval()
        to_torch_prune(mask, model)
        assert from_torch_prune(model) == mask
        assert torch.allclose(model(tokens), by_hand(tokens), atol=1e-6)
        for name in mask:  # make permanent: the weights are now exactly the masked ones
            module_name, _, attr = name.rpartition(".")
            torch_prune.remove(model.get_submodule(module_name), attr)
        assert torch.allclose(model(tokens), by_hand(tokens), atol=1e-6)


def test_uniform_predictor_has_perplexity_equal_to_vocabulary_size():
    class Uniform(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(VOCAB))

        def forward(self, tokens):
            return self.bias.expand(*tokens.shape, VOCAB)

    data = token_dataset()
    loss, accuracy = evaluate_members(Uniform(), 1, data.x_test, data.y_test)
    assert math.exp(loss[0]) == pytest.approx(VOCAB, rel=1e-6)  # float32 log-softmax
    metrics = Supervised(data).evaluate(Uniform(), 1)[0]
    assert math.exp(metrics["test_loss"]) == pytest.approx(VOCAB, rel=1e-6)  # float32 log-softmax


def test_token_loss_is_the_mean_over_every_token():
    data = token_dataset()
    model = built(TinyLSTM)
    x, y = data.x_train[:5], data.y_train[:5]
    loss = Supervised(data).losses(model, [(x, y)], 1)
    by_hand = nn.functional.cross_entropy(model(x).permute(0, 2, 1), y)
    assert torch.allclose(loss, by_hand.reshape(1), atol=1e-6)


def test_flops_count_sequence_layers_per_token():
    model = built(TinyLSTM)
    uses = cost.weight_uses(model, (LENGTH,), torch.long)
    assert uses["embedding.weight"] == 0
    assert uses["rnn.weight_hh_l1"] == LENGTH and uses["head.weight"] == LENGTH
    uses = cost.weight_uses(built(TinyTransformer), (LENGTH,), torch.long)
    assert uses["block.self_attn.in_proj_weight"] == LENGTH and uses["block.linear1.weight"] == LENGTH


class Regression(Objective):
    """A toy non-classification objective: fit y = A x with mean squared error (a stream of fresh Gaussian x)."""

    headline = "test_mse"
    monitor = "val_mse"
    loss_floor = None
    has_validation = True

    def __init__(self):
        self.spec = {"name": "regression", "dim": 6}
        self.device = torch.device("cpu")
        self.target = torch.randn(6, 6, generator=torch.Generator().manual_seed(5))
        self.x_eval = torch.randn(64, 6, generator=torch.Generator().manual_seed(6))
        self.hook_calls = 0

    def build(self, model, seed):
        net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 6))
        return reinitialize(net, "glorot", torch.Generator().manual_seed(seed))

    def stream(self, seed, batch_size):
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield torch.randn(batch_size, 6, generator=generator)

    def losses(self, net, drawn, members):
        x = torch.cat(drawn)
        return ((net(x) - x @ self.target.T) ** 2).reshape(members, -1).mean(1)

    def after_backward(self, net, members):
        self.hook_calls += 1
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)

    @torch.no_grad()
    def evaluate(self, net, members):  # a population takes member-major inputs: every member sees x_eval
        out = net(self.x_eval.repeat(members, 1)).reshape(members, *self.x_eval.shape)
        mse = ((out - self.x_eval @ self.target.T) ** 2).mean((1, 2)).tolist()
        return [{"val_loss": m, "val_mse": m, "test_mse": m} for m in mse]


def test_any_objective_runs_through_the_same_imp(tmp_path):
    objective = Regression()
    config = TrainConfig(optimizer="adam", lr=1e-2, batch_size=32, iterations=60, eval_every=30)
    store = RunStore(tmp_path)
    result = imp.run(objective, "regression_mlp", config, rounds=2, fraction=0.5, reset="init", seed=3,
                     store=store, progress=False)
    assert objective.hook_calls > 0
    masks = result.masks
    assert [m.num_kept for m in masks][1:] == [round(0.5 * masks[0].num_total), round(0.25 * masks[0].num_total)]
    assert masks[2].is_subset_of(masks[1])
    for r in result.rounds[1:]:
        assert set(r.controls) == {"reinit", "random"}
        assert "test_mse" in r.ticket.history[-1] and r.train_flops is None
    dense = result.rounds[0].ticket
    assert dense.final("test_mse") < dense.history[0]["test_mse"] / 2  # the objective was optimised
    rows = result.records()
    assert rows[0]["final_test_accuracy"] is None and rows[-1]["search_flops"] is None

    again = Regression()
    repeat = imp.run(again, "regression_mlp", config, rounds=2, fraction=0.5, reset="init", seed=3, store=store,
                     progress=False)
    assert again.hook_calls == 0  # everything loaded from the run store
    assert all(a == b for a, b in zip(repeat.masks, masks))


def test_an_objective_without_a_floor_diverges_only_on_non_finite_loss():
    class Growing(Regression):
        def losses(self, net, drawn, members):  # rises far above 100 x its start, stays finite
            return super().losses(net, drawn, members) * 0 + 1e6 * net[0].weight.abs().sum() ** 0

    objective = Growing()
    model = objective.build("m", 0)
    train(model, objective, TrainConfig(iterations=5, eval_every=5, batch_size=4), seed=0, progress=False)

    class Exploding(Regression):
        def losses(self, net, drawn, members):
            return super().losses(net, drawn, members) * float("inf")

    with pytest.raises(DivergenceError, match="diverged = non-finite\\)"):
        train(Exploding().build("m", 0), Exploding(), TrainConfig(iterations=5, eval_every=5, batch_size=4),
              seed=0, progress=False)


def test_as_objective():
    data = token_dataset()
    assert isinstance(as_objective(data), Supervised) and as_objective(data).spec == data.spec
    objective = Regression()
    assert as_objective(objective) is objective
    with pytest.raises(TypeError, match="Dataset or Objective"):
        as_objective("mnist1d")
