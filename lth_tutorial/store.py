"""A content-addressed cache of finished runs, so nothing is trained twice and interrupted runs resume.

An entry's key is the SHA-256 of a canonical JSON description of everything that determines the result (dataset
spec, model, training config, seeds, masks by content hash, package and torch versions, device type). The same
description always gives the same key; changing anything gives a new one.

Entries are single files ``<root>/<key[:2]>/<key>.pt``: a header line ``LTH1 <sha256 of payload>`` followed by a
``torch.save`` payload of plain data (dicts, lists, numbers, strings, tensors; loaded with ``weights_only=True``).
Writes go to a temporary file in the same folder and are moved into place with ``os.replace``, so a killed process
never leaves a half-written entry under the final name; an entry whose checksum or payload does not verify is
reported with a warning, deleted and recomputed.

Location: ``$LTH_CACHE/runs`` if ``LTH_CACHE`` is set, else the per-user cache directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from .paths import cache_dir

__all__ = ["RunStore", "CorruptEntryWarning", "canonical_key", "default_store", "state_digest", "atomic_write"]

T = TypeVar("T")
_MAGIC = b"LTH1 "


class CorruptEntryWarning(UserWarning):
    """A cache entry failed verification and will be recomputed."""


def _jsonable(obj: Any) -> Any:
    from .masks import Mask

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__, **{k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}}
    if isinstance(obj, Mask):
        return {"__mask__": obj.digest()}
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return {"__tensor__": hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16], "shape": list(t.shape),
                "dtype": str(t.dtype)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return "nan"
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot put {type(obj).__name__} into a cache key")


def canonical_key(parts: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of ``parts`` plus the package and torch versions."""
    from . import __version__

    full = {"parts": _jsonable(parts), "lth_tutorial": __version__,
            "torch": ".".join(torch.__version__.split("+")[0].split(".")[:2])}
    text = json.dumps(full, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a killed writer) never sees a half-written file: a temporary
    file in the same folder, flushed to disk, then moved into place with ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class RunStore:
    """Cache of finished runs on disk.

    Args:
        root: folder of the entries; default ``cache_dir() / "runs"`` (``$LTH_CACHE/runs`` when set).
        enabled: ``False`` turns the store into a pass-through (always computes, never writes).
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else cache_dir() / "runs"
        self.enabled = enabled

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r}, enabled={self.enabled})"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def get(self, key: str) -> Any | None:
        """The payload stored under ``key``; ``None`` if absent or corrupt (a corrupt entry is deleted)."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            header, payload = raw.split(b"\n", 1)
            if not header.startswith(_MAGIC) or header[len(_MAGIC):].decode() != hashlib.sha256(payload).hexdigest():
                raise ValueError("checksum mismatch")
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, tampered, unreadable
            warnings.warn(f"cache entry {path} is corrupt ({err}); recomputing it", CorruptEntryWarning,
                          stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, payload: Any) -> None:
        """Store ``payload`` (plain data and tensors) under ``key``, atomically."""
        if not self.enabled:
            return
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        body = buffer.getvalue()
        atomic_write(self.path(key), _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)

    def cached(self, parts: dict, compute: Callable[[], T]) -> T:
        """Return the stored payload for ``parts`` or compute, store and return it."""
        key = canonical_key(parts)
        hit = self.get(key)
        if hit is not None:
            return hit
        value = compute()
        self.put(key, value)
        return value

    def __contains__(self, parts: dict) -> bool:
        return self.enabled and self.path(canonical_key(parts)).exists()

    def clear(self) -> int:
        """Delete every entry; returns how many were removed."""
        n = 0
        if self.root.exists():
            for f in self.root.glob("*/*.pt"):
                f.unlink()
                n += 1
        return n


def default_store(store: "RunStore | bool | None") -> RunStore:
    """Normalise a ``store=`` argument: ``None``/``True`` = the default store, ``False`` = disabled."""
    if isinstance(store, RunStore):
        return store
    if store is False:
        return RunStore(enabled=False)
    return RunStore()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a ``state_dict`` (names, shapes, dtypes and bytes), independent of the device."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:32]
