"""Language-model data: tokenisation, the capped vocabulary, next-token sequences, determinism for a seed,
WikiText-2 read from files in its format (and a clear error offline), bad corpora, perplexity; pruned LSTM and
Transformer weights (recurrent and attention included) stay zero through training on token data."""

from __future__ import annotations

import math

import pytest
import torch

from lth_tutorial import language, models, scores
from lth_tutorial.data import DatasetUnavailableError
from lth_tutorial.masks import prune
from lth_tutorial.objectives import Supervised, evaluate_members
from lth_tutorial.training import TrainConfig, train

torch.set_num_threads(1)

LINES = {
    "train": [" = Valkyria Chronicles = ", "", " the game was released in japan in 2011 . the game was a success .",
              " the sequel was released in 2012 , and the game sold well ."] * 5,
    "val": [" the game sold in japan and the sequel was released . "] * 3,
    "test": [" a new game was released in 2013 ; it sold well . "] * 3,
}


def write_wikitext(root, lines=LINES):
    folder = root / "wikitext-2"
    folder.mkdir(parents=True)
    for split, name in language.WIKITEXT2_FILES.items():
        (folder / name).write_text("\n".join(lines[split]) + "\n", encoding="utf-8")
    return folder


def test_tokenize_and_vocabulary():
    assert language.tokenize("If x == 1: print('Hi')") == ["if", "x", "=", "=", "1", ":", "print", "(", "'", "hi",
                                                            "'", ")", "<eos>"]
    vocab = language.build_vocabulary(["b", "a", "b", "c", "a", "b", "<unk>"], size=3)
    assert vocab == ["<unk>", "b", "a"]  # most frequent first, <unk> at id 0, ties alphabetical
    assert language.build_vocabulary(["b", "a"], size=None) == ["<unk>", "a", "b"]
    with pytest.raises(ValueError, match="vocab_size"):
        language.build_vocabulary(["a"], size=1)


def test_sequences_are_inputs_and_next_tokens():
    ids = torch.arange(11)
    x, y = language.sequences(ids, 3)
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="seq_len=11 is longer than the corpus allows \\(11 tokens"):
        language.sequences(ids, 11)


def test_pydoc_pipeline_is_deterministic_for_a_seed():
    a = language.load("pydoc", seq_len=16, vocab_size=300, seed=0, max_eval=50)
    b = language.load("pydoc", seq_len=16, vocab_size=300, seed=0, max_eval=50)
    c = language.load("pydoc", seq_len=16, vocab_size=300, seed=1, max_eval=50)
    assert a.spec == b.spec and a.spec["digest"] == b.spec["digest"]
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("x_train", "y_train", "x_val", "x_test"))
    assert a.spec["digest"] != c.spec["digest"]  # another seed holds out other topics
    assert a.x_train.dtype == torch.long and a.x_train.shape[1] == 16 and a.num_classes == 300
    assert torch.equal(a.x_train[:, 1:], a.y_train[:, :-1])  # targets are the next tokens
    assert int(a.x_train.max()) < 300 and len(a.x_val) == 50
    corpus = language.corpus("pydoc", vocab_size=300, seed=0)
    assert corpus.vocabulary[0] == "<unk>" and 0 < corpus.unk_rate["train"] < 0.2


def test_uniform_predictor_has_perplexity_equal_to_the_vocabulary_size():
    data = language.load("pydoc", seq_len=8, vocab_size=200, max_eval=40)

    class Uniform(torch.nn.Module):
        def forward(self, tokens):
            return torch.zeros(*tokens.shape, 200)

    loss, _ = evaluate_members(Uniform(), 1, data.x_test, data.y_test)
    assert language.perplexity(loss[0]) == pytest.approx(200, rel=1e-5)
    assert language.perplexity(math.log(17)) == pytest.approx(17)


def test_wikitext_from_files_in_its_format(tmp_path):
    write_wikitext(tmp_path)
    data = language.load("wikitext2", seq_len=4, vocab_size=None, root=tmp_path, download=False)
    corpus = language.corpus("wikitext2", vocab_size=None, root=tmp_path, download=False)
    assert data.num_classes == len(corpus.vocabulary)
    assert "valkyria" not in corpus.vocabulary and "Valkyria" in corpus.vocabulary  # already tokenised: kept as is
    assert corpus.decode(corpus.ids["train"][:5]) == "= Valkyria Chronicles = <eos>"
    assert "<unk>" in corpus.decode(corpus.ids["test"])  # "2013", ";" and "new" never occur in training
    capped = language.load("wikitext2", seq_len=4, vocab_size=5, root=tmp_path, download=False)
    assert capped.num_classes == 5 and int(capped.x_test.max()) < 5


def test_wikitext_missing_offline_names_the_files_and_writes_nothing(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens"):
        language.load("wikitext2", root=tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"  \n\n ", "empty"),
                                               (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text"),
                                               (b"abc\x00def", "NUL bytes")])
def test_bad_corpus_files_are_clear_errors(tmp_path, content, message):
    folder = write_wikitext(tmp_path)
    (folder / "wiki.valid.tokens").write_bytes(content)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ValueError, match=message):
        language.load("wikitext2", root=tmp_path, download=False)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'shakespeare'; valid corpora: pydoc, wikitext2"):
        language.load("shakespeare")
    write_wikitext(tmp_path)
    with pytest.raises(ValueError, match="longer than the wikitext2 val split allows"):
        language.load("wikitext2", seq_len=50, root=tmp_path, download=False)


@pytest.mark.parametrize("name", ["lstm_lm", "transformer_lm"])
def test_pruned_language_model_weights_stay_zero_through_training(tmp_path, name):
    write_wikitext(tmp_path)
    data = language.load("wikitext2", seq_len=6, vocab_size=None, root=tmp_path, download=False)
    model = models.build(name, data.input_shape, data.num_classes, seed=0)
    mask = prune(scores.magnitude(model), 0.7, scope="layer")
    kinds = [n for n in mask if "weight_hh" in n or "in_proj" in n or "embedding" in n]
    assert kinds and all(0 < mask[n].float().mean() < 1 for n in kinds)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = TrainConfig(optimizer="adam", lr=1e-2, weight_decay=1e-3, batch_size=4, iterations=15, eval_every=15)
    train(model, Supervised(data), config, mask=mask, seed=0, progress=False)
    params = dict(model.named_parameters())
    for n, kept in mask.items():
        assert torch.all(params[n][~kept] == 0), n
        assert not torch.equal(params[n][kept], before[n][kept]), n


def test_language_models_are_seeded_and_shaped():
    for name in ("lstm_lm", "transformer_lm"):
        a, b = models.build(name, (12,), 50, seed=3), models.build(name, (12,), 50, seed=3)
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
        assert a(torch.randint(0, 50, (2, 12))).shape == (2, 12, 50)
    lstm = models.build("lstm_lm", (12,), 50, seed=0)
    assert float(lstm.embedding.weight.detach().abs().max()) <= 0.1 and not lstm.decoder.bias.detach().any()
    transformer = models.build("transformer_lm", (12,), 50, seed=0)
    tokens = torch.randint(0, 50, (1, 12))
    changed = tokens.clone()
    changed[0, 8:] = (tokens[0, 8:] + 1) % 50
    assert torch.allclose(transformer(tokens)[0, :8], transformer(changed)[0, :8], atol=1e-6)  # causal
    with pytest.raises(ValueError, match="sequence length"):
        models.build("lstm_lm", (1, 12), 50)
