"""Word-level language-modelling data: corpora, tokenisation, a capped vocabulary, ``(N, L)`` next-token sequences.

A corpus becomes a :class:`~lth_tutorial.data.Dataset` whose inputs ``x_*`` are token ids ``(N, L)`` int64 and whose
targets ``y_*`` are the next token at every position ``(N, L)`` int64 (``num_classes`` = vocabulary size,
``input_shape = (L,)``). :class:`lth_tutorial.objectives.Supervised` then trains on the mean token cross-entropy, so a
language model runs through :func:`lth_tutorial.imp.run` like any classifier, and its perplexity is
:func:`perplexity` of the loss.

Corpora:

* ``pydoc`` (offline, quick mode): the English reference prose that ships inside every CPython,
  ``pydoc_data.topics`` (the text of ``help("if")``, ``help("NUMBERS")``, ...; 79 topics, ~0.5 MB, ~120,000 word
  tokens). Chosen because it needs no download and no extra package, is real edited English with a Zipf-like
  vocabulary (so the embedding is the largest layer and the question "which layers does IMP prune?" can be asked),
  and is small enough for a CPU. It differs between Python versions; the dataset's digest (part of every run-store
  key) keeps the cached runs of different versions apart. Topics are split into train / validation / test by a
  seeded shuffle (about 80 / 10 / 10 % of the tokens), so the held-out text is whole unseen topics.
* ``wikitext2`` (full mode): WikiText-2 (Merity et al. 2016), the language-modelling corpus of Yu et al. (2019),
  read from ``<root>/wikitext-2/wiki.{train,valid,test}.tokens``; downloaded when missing and the network allows,
  otherwise :class:`~lth_tutorial.data.DatasetUnavailableError` names the files to copy where.

Tokenisation: WikiText is already tokenised (split on whitespace); pydoc text is lower-cased and split into words,
numbers and single punctuation marks, its blank lines and heading underlines (``=====``) dropped. Every line ends in
``<eos>`` (as PyTorch's ``word_language_model`` example
reads WikiText). The vocabulary is the ``vocab_size - 1`` most frequent training tokens (ties broken
alphabetically) plus ``<unk>``, which stands for every other token; ``vocab_size=None`` keeps every training token.
"""

from __future__ import annotations

import collections
import io
import math
import re
import shutil
import socket
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import Dataset, DatasetUnavailableError, default_root

__all__ = ["CORPORA", "Corpus", "corpus", "load", "tokenize", "build_vocabulary", "sequences", "perplexity",
           "read_text", "WIKITEXT2_FILES", "WIKITEXT2_URL", "UNK", "EOS"]

CORPORA = ("pydoc", "wikitext2")
UNK, EOS = "<unk>", "<eos>"
WIKITEXT2_FILES = {"train": "wiki.train.tokens", "val": "wiki.valid.tokens", "test": "wiki.test.tokens"}
#: Salesforce's WikiText-2 (v1, tokenised) archive, as hosted by its author.
WIKITEXT2_URL = "https://wikitext.smerity.com/wikitext-2-v1.zip"
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")
_RULE = re.compile(r"\s*([=\-*~^#+`'\"])\1*\s*")  # a heading underline of reStructuredText ("=====", "*****")


@dataclass
class Corpus:
    """A tokenised corpus: ``vocabulary[i]`` is token id ``i`` (``<unk>`` is id 0); ``ids[split]`` the split's token
    ids ``(T,)`` int64 in reading order; ``spec`` what determined them."""

    name: str
    vocabulary: list[str]
    ids: dict[str, torch.Tensor]
    spec: dict

    def decode(self, ids) -> str:
        """The words of token ids, separated by spaces."""
        return " ".join(self.vocabulary[int(i)] for i in ids)

    @property
    def unk_rate(self) -> dict[str, float]:
        """Fraction of each split's tokens that are ``<unk>``."""
        return {s: float((t == 0).double().mean()) for s, t in self.ids.items()}


def tokenize(line: str, lower: bool = True) -> list[str]:
    """Words, numbers and single punctuation marks of one line (lower-cased), then ``<eos>``; e.g.
    ``tokenize("x = 1")`` is ``["x", "=", "1", "<eos>"]``."""
    return _WORD.findall(line.lower() if lower else line) + [EOS]


def build_vocabulary(tokens: list[str], size: int | None) -> list[str]:
    """``<unk>`` followed by the ``size - 1`` most frequent ``tokens`` (ties alphabetical); all of them for
    ``None``."""
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 2):
        raise ValueError(f"vocab_size must be a whole number >= 2 (it includes <unk>) or None, got {size!r}")
    counts = collections.Counter(t for t in tokens if t != UNK)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    return [UNK] + (ranked if size is None else ranked[: int(size) - 1])


def sequences(ids: torch.Tensor, seq_len: int, what: str = "corpus") -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of a token stream ``(T,)``: inputs ``ids[i L : (i+1) L]`` and targets shifted by one,
    both ``(N, L)`` with ``N = (T - 1) // L``.

    Raises:
        ValueError: ``seq_len`` < 1, or longer than the stream allows (``T - 1`` tokens of input; names ``what``).
    """
    if isinstance(seq_len, bool) or int(seq_len) != seq_len or seq_len < 1:
        raise ValueError(f"seq_len must be a whole number >= 1, got {seq_len!r}")
    n = (len(ids) - 1) // int(seq_len)
    if n < 1:
        raise ValueError(f"seq_len={seq_len} is longer than the {what} allows ({len(ids)} tokens, so at most "
                         f"{max(len(ids) - 1, 0)} per sequence); use a shorter seq_len or a bigger corpus")
    span = n * int(seq_len)
    return ids[:span].reshape(n, -1).clone(), ids[1:span + 1].reshape(n, -1).clone()


def perplexity(loss: float) -> float:
    """Perplexity ``exp(loss)`` of a mean token cross-entropy (nats); a uniform guess over V tokens gives V."""
    return math.exp(loss)


def read_text(path: str | Path) -> str:
    """A corpus file as text.

    Raises:
        ValueError: the file is not UTF-8 text (binary content, NUL bytes) or holds no words.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); a corpus file must be "
                         f"plain text, one paragraph per line") from None
    if "\x00" in text:
        raise ValueError(f"{path} contains NUL bytes, so it is not a text file; a corpus file must be plain text")
    if not text.split():
        raise ValueError(f"{path} is empty (no words); a corpus file must hold text")
    return text


def _pydoc_splits(seed: int) -> dict[str, list[str]]:
    """The lines of pydoc's topics, split by whole topics (seeded shuffle; ~10 % of the tokens each for val and
    test)."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(int(seed))).tolist()
    total = sum(len(t) for t in topics.values())
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    held = {"val": 0, "test": 0}
    for i in order:
        text = topics[names[i]]
        target = next((s for s in ("val", "test") if held[s] < 0.1 * total), "train")
        if target != "train":
            held[target] += len(text)
        splits[target].extend(text.splitlines())
    return splits


def _wikitext_folder(root: Path, download: bool) -> Path:
    folder = root / "wikitext-2"
    if all((folder / f).is_file() for f in WIKITEXT2_FILES.values()):
        return folder
    files = ", ".join(WIKITEXT2_FILES.values())
    if not download:
        raise DatasetUnavailableError(f"WikiText-2 is not in {folder} and download=False: copy {files} (from "
                                      f"{WIKITEXT2_URL}) into {folder}, or use the offline corpus 'pydoc'")
    try:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            with urllib.request.urlopen(WIKITEXT2_URL) as response:
                archive = zipfile.ZipFile(io.BytesIO(response.read()))
        finally:
            socket.setdefaulttimeout(old)
        folder.mkdir(parents=True, exist_ok=True)
        for member in archive.namelist():
            name = Path(member).name
            if name in WIKITEXT2_FILES.values():
                partial = folder / (name + ".part")
                with archive.open(member) as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                partial.replace(folder / name)
    except (OSError, zipfile.BadZipFile) as err:
        raise DatasetUnavailableError(f"WikiText-2 could not be downloaded from {WIKITEXT2_URL} ({err}): copy "
                                      f"{files} into {folder}, or use the offline corpus 'pydoc'") from None
    missing = [f for f in WIKITEXT2_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise DatasetUnavailableError(f"the WikiText-2 archive lacked {missing}: copy {files} into {folder}")
    return folder


def corpus(name: str = "pydoc", vocab_size: int | None = 1000, seed: int = 0, root: str | Path | None = None,
           download: bool = True) -> Corpus:
    """Tokenise corpus ``name`` (see the module docstring) with a vocabulary built on its training split.

    Args:
        vocab_size: vocabulary size including ``<unk>``; ``None`` keeps every training token.
        seed: which topics of ``pydoc`` are held out (WikiText-2 has fixed splits; the seed is ignored there).
        root: folder holding ``wikitext-2/`` (default :func:`lth_tutorial.data.default_root`).
        download: fetch WikiText-2 when it is not on disk.

    Raises:
        ValueError: an unknown corpus, a bad ``vocab_size``, an empty or non-text corpus file.
        DatasetUnavailableError: WikiText-2 neither on disk nor downloadable (names the files to copy where).
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; valid corpora: {', '.join(CORPORA)}")
    if name == "pydoc":
        lines = _pydoc_splits(seed)
        tokens = {s: [t for line in ls if line.strip() and not _RULE.fullmatch(line) for t in tokenize(line)]
                  for s, ls in lines.items()}
        spec = {"name": name, "seed": int(seed), "vocab_size": vocab_size}
    else:
        folder = _wikitext_folder(Path(root) if root is not None else default_root(), download)
        tokens = {s: [t for line in read_text(folder / f).splitlines() for t in line.split() + [EOS]]
                  for s, f in WIKITEXT2_FILES.items()}
        spec = {"name": name, "vocab_size": vocab_size}
    vocabulary = build_vocabulary(tokens["train"], vocab_size)
    index = {t: i for i, t in enumerate(vocabulary)}
    ids = {s: torch.tensor([index.get(t, 0) for t in ts], dtype=torch.long) for s, ts in tokens.items()}
    return Corpus(name, vocabulary, ids, spec)


def load(name: str = "pydoc", seq_len: int = 32, vocab_size: int | None = 1000, seed: int = 0,
         root: str | Path | None = None, download: bool = True, device: str | torch.device = "cpu",
         max_train: int | None = None, max_eval: int | None = None) -> Dataset:
    """A next-token :class:`~lth_tutorial.data.Dataset` of corpus ``name``: ``x_*`` / ``y_*`` token ids
    ``(N, seq_len)`` int64 from :func:`sequences` of each split, ``num_classes`` = vocabulary size.

    The same arguments always give the same tensors. ``max_train`` keeps only the first that many training
    sequences (quick mode). Errors as in :func:`corpus` and :func:`sequences` (a ``seq_len`` longer than a split),
    raised before anything is built. ``max_eval`` likewise keeps the first that many validation and test sequences.
    """
    text = corpus(name, vocab_size, seed, root, download)
    splits = {s: sequences(ids, seq_len, f"{name} {s} split") for s, ids in text.ids.items()}
    x_train, y_train = splits["train"]
    x_train, y_train = x_train[:max_train], y_train[:max_train]
    device = torch.device(device)
    to = lambda t: t.to(device)  # noqa: E731
    (x_val, y_val), (x_test, y_test) = ((x[:max_eval], y[:max_eval]) for x, y in (splits["val"], splits["test"]))
    return Dataset(name, to(x_train), to(y_train), to(x_val), to(y_val), to(x_test), to(y_test),
                   num_classes=len(text.vocabulary), input_shape=(int(seq_len),),
                   spec={**text.spec, "seq_len": int(seq_len), "max_train": max_train, "max_eval": max_eval})
