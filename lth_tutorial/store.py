"""A content-addressed cache of finished runs, so nothing is trained twice and interrupted runs resume.

What the key contains. An entry's key is the SHA-256 of a canonical JSON description of everything that determines
the result: the caller's parts (for :func:`lth_tutorial.training.cached_train`: dataset spec including a digest of
the dataset's tensors, architecture, starting weights by content, training config, mask by content, seed, snapshot
and start iterations, step count, held pruned values, device type), plus

* a digest of the package's source: the SHA-256 over the relative path and bytes of every ``.py`` file of
  ``lth_tutorial`` (computed once per process), so any edit to the package's source invalidates every entry;
* the source text of any callable found in the parts that is not defined in the package (e.g. a custom
  augmentation), with its default arguments and closure values; a callable whose source cannot be read makes the
  run uncacheable: it is computed, not stored, and an :class:`UncachedRunWarning` says why;
* PyTorch's minor version and the number of CPU threads PyTorch uses (``torch.get_num_threads()``): results on
  the CPU differ in their last bits between thread counts, so a run is keyed on the count it ran with;
* the store's schema version :data:`SCHEMA`.

The same description always gives the same key; changing anything gives a new one.

Entries are single files ``<root>/<key[:2]>/<key>.pt``: a header line ``LTH2 <schema> <key> <sha256 of payload>``
followed by a ``torch.save`` payload of plain data (dicts, lists, numbers, strings, tensors; loaded with
``weights_only=True``). Writes go to a temporary file in the same folder and are moved into place with
``os.replace``, so a killed process never leaves a half-written entry under the final name; the temporary file is
removed when the write fails or is interrupted, and :meth:`RunStore.cleanup` removes those a killed process left.

Anything wrong with an entry -- a checksum that does not verify, a header of another schema or of another key (an
entry copied under another key's name), a payload that does not decode (or that the caller's ``decode`` rejects),
an entry path that is a folder or cannot be read -- is treated as corruption: one :class:`CorruptEntryWarning`
line, the entry is removed and the run recomputed. A write that fails (full or read-only disk) warns once and the
store carries on without writing.

Location: ``$LTH_CACHE/runs`` if ``LTH_CACHE`` is set, else the per-user cache directory.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import io
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from .paths import cache_dir

__all__ = ["RunStore", "CorruptEntryWarning", "UncachedRunWarning", "UncacheableError", "CacheWriteWarning",
           "canonical_key", "default_store", "state_digest", "tensor_digest", "source_digest", "package_digest",
           "callable_fingerprint", "atomic_write", "check_writable", "remove_stale_temporaries", "SCHEMA"]

T = TypeVar("T")
#: Version of the entry format (header and payload layout); entries of another schema are recomputed.
SCHEMA = 2
_MAGIC = b"LTH2"
_PACKAGE_DIR = Path(__file__).resolve().parent


class CorruptEntryWarning(UserWarning):
    """A cache entry failed verification; it is removed and recomputed."""


class UncachedRunWarning(UserWarning):
    """A run could not be keyed (e.g. a callable whose source is unavailable); it is computed but not stored."""


class CacheWriteWarning(UserWarning):
    """Writing a cache entry failed; the store carries on without writing."""


class UncacheableError(TypeError):
    """Something in a key's parts has no stable description (the run is computed, not cached)."""


# ----------------------------------------------------------------------------------------------------------------
# Digests


def source_digest(folder: str | os.PathLike) -> str:
    """SHA-256 (hex) over the relative path and bytes of every ``.py`` file under ``folder`` (sorted by path).

    Any edit, added or removed file changes it. Not cached: see :func:`package_digest` for the package's own.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.py"), key=lambda p: p.relative_to(folder).as_posix()):
        rel = path.relative_to(folder).as_posix()
        if "__pycache__" in rel.split("/"):
            continue
        data = path.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def package_digest() -> str:
    """:func:`source_digest` of the installed ``lth_tutorial`` package, computed once per process."""
    return source_digest(_PACKAGE_DIR)


def tensor_digest(*tensors: torch.Tensor) -> str:
    """Content hash (hex, 32 characters) of tensors: their shapes, dtypes and bytes, independent of the device."""
    h = hashlib.sha256()
    for t in tensors:
        _hash_tensor(h, t)
    return h.hexdigest()[:32]


def _hash_tensor(h, t: torch.Tensor) -> None:
    """Feed one tensor's shape, dtype and bytes (from a CPU copy) into the hash ``h``."""
    t = t.detach().cpu().contiguous()
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())


def callable_fingerprint(fn: Callable) -> dict:
    """A stable description of a callable for a cache key.

    A function of the package: its qualified name (its source is covered by :func:`package_digest`). Any other
    function: its qualified name, the SHA-256 of its source text, its default arguments and closure values.

    Raises:
        UncacheableError: the source is unavailable (built-in, defined in an interactive prompt), or a default or
            closure value has no stable description.
    """
    target = inspect.unwrap(fn)
    if isinstance(target, functools.partial):
        return {"__partial__": callable_fingerprint(target.func), "args": _jsonable(list(target.args)),
                "kwargs": _jsonable(dict(target.keywords))}
    module = getattr(target, "__module__", None) or ""
    name = f"{module}.{getattr(target, '__qualname__', type(target).__qualname__)}"
    if module == "lth_tutorial" or module.startswith("lth_tutorial."):
        return {"__callable__": name}
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError) as err:
        raise UncacheableError(f"the source of {name} is not available ({err})") from None
    described = {"__callable__": name, "source": hashlib.sha256(source.encode()).hexdigest()}
    try:
        if getattr(target, "__defaults__", None):
            described["defaults"] = _jsonable(list(target.__defaults__))
        if getattr(target, "__kwdefaults__", None):
            described["kwdefaults"] = _jsonable(dict(target.__kwdefaults__))
        if getattr(target, "__closure__", None):
            described["closure"] = _jsonable([cell.cell_contents for cell in target.__closure__])
    except (TypeError, ValueError) as err:
        raise UncacheableError(f"{name} uses a value that cannot be keyed ({err})") from None
    return described


def _jsonable(obj: Any) -> Any:
    from .masks import Mask

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__,
                **{f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, Mask):
        return {"__mask__": obj.digest()}
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return {"__tensor__": tensor_digest(t)[:16], "shape": list(t.shape), "dtype": str(t.dtype)}
    if isinstance(obj, dict):
        if "__uncacheable__" in obj:  # left by a part that could not be described (e.g. Dataset.augmentation)
            raise UncacheableError(str(obj["__uncacheable__"]))
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return "nan"
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if inspect.isroutine(obj) or isinstance(obj, functools.partial):
        return callable_fingerprint(obj)
    raise UncacheableError(f"cannot put {type(obj).__name__} into a cache key")


def canonical_key(parts: dict, *, source: str | None = None, threads: int | None = None) -> str:
    """SHA-256 (hex) of the canonical JSON of ``parts`` plus the package version and source digest, torch's minor
    version, the CPU thread count and the schema version (see the module docstring).

    ``source`` and ``threads`` default to this process's :func:`package_digest` and thread count; pass them to
    compute the key another process will use (``lth sweep status`` keys a job as the job, started now, will: with
    the source on disk and the job's thread count).

    Raises:
        UncacheableError: something in ``parts`` has no stable description.
    """
    from . import __version__

    full = {"parts": _jsonable(parts), "lth_tutorial": __version__,
            "source": package_digest() if source is None else source,
            "torch": ".".join(torch.__version__.split("+")[0].split(".")[:2]),
            "threads": torch.get_num_threads() if threads is None else int(threads), "schema": SCHEMA}
    text = json.dumps(full, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Files


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a killed writer) never sees a half-written file: a temporary
    file in the same folder, flushed to disk, then moved into place with ``os.replace``. The temporary file is
    removed whatever happens (error, Ctrl-C); only ``kill -9`` can leave one, which :meth:`RunStore.cleanup`
    removes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: str | os.PathLike, what: str = "folder") -> Path:
    """Make sure files can be created in ``folder`` (creating it if needed) by writing and removing a probe file.

    Raises:
        ValueError: one line naming ``what`` and the reason (a file in the way, read-only, no space, ...).
    """
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {folder} cannot be created: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe.{os.getpid()}.tmp"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"probe")
        finally:
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise ValueError(f"{what} {folder} is not writable ({err.strerror or err})") from None
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike, max_age_seconds: float = 3600.0) -> int:
    """Remove the temporary files of :func:`atomic_write` in ``folder`` (``.<name>.<pid>.tmp``) whose writing
    process is gone (a ``kill -9``) or that are older than ``max_age_seconds``. Returns how many were removed."""
    n, now = 0, time.time()
    for f in Path(folder).glob(".*.tmp"):
        try:
            pid = int(f.name.rsplit(".", 2)[-2])
        except (ValueError, IndexError):
            pid = None
        try:
            if (pid is not None and not _pid_alive(pid)) or now - f.stat().st_mtime > max_age_seconds:
                f.unlink()
                n += 1
        except OSError:
            pass
    return n


class _BadEntry(Exception):
    pass


class RunStore:
    """Cache of finished runs on disk.

    Args:
        root: folder of the entries; default ``cache_dir() / "runs"`` (``$LTH_CACHE/runs`` when set).
        enabled: ``False`` turns the store into a pass-through (always computes, never writes).
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else cache_dir() / "runs"
        self.enabled = enabled
        self.write_failed: str | None = None  # why writing was given up, once it failed

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r}, enabled={self.enabled})"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def _corrupt(self, path: Path, reason: str) -> None:
        warnings.warn(f"cache entry {path} is corrupt ({reason}); recomputing it", CorruptEntryWarning, stacklevel=3)
        try:
            _remove(path)
        except OSError:
            pass

    def get(self, key: str, decode: Callable[[Any], T] | None = None) -> Any | None:
        """The payload stored under ``key`` (passed through ``decode`` when given); ``None`` if absent or corrupt.

        A corrupt entry (see the module docstring; an exception raised by ``decode`` counts) is reported with one
        :class:`CorruptEntryWarning` and removed.
        """
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:  # a folder under the entry's name, no permission, I/O error
            self._corrupt(path, f"{type(err).__name__}: {err.strerror or err}")
            return None
        try:
            if b"\n" not in raw:
                raise _BadEntry("no header line")
            header, payload = raw.split(b"\n", 1)
            fields = header.decode("ascii").split(" ")
            if len(fields) != 4 or fields[0] != _MAGIC.decode():
                raise _BadEntry("not an entry of this store")
            if fields[1] != str(SCHEMA):
                raise _BadEntry(f"schema {fields[1]}, expected {SCHEMA}")
            if fields[2] != key:
                raise _BadEntry("its header names another key")
            if fields[3] != hashlib.sha256(payload).hexdigest():
                raise _BadEntry("checksum mismatch")
            value = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            return decode(value) if decode is not None else value
        except Exception as err:  # truncated, tampered, copied, undecodable
            self._corrupt(path, " ".join(str(err).split())[:200] or type(err).__name__)
            return None

    def put(self, key: str, payload: Any) -> bool:
        """Store ``payload`` (plain data and tensors) under ``key``, atomically; returns whether it was stored.

        A failed write (full or read-only disk, a file in the way) leaves no temporary file, warns once with a
        :class:`CacheWriteWarning` and turns writing off for this store, so a long run carries on uncached.
        """
        if not self.enabled or self.write_failed:
            return False
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        body = buffer.getvalue()
        header = f"{_MAGIC.decode()} {SCHEMA} {key} {hashlib.sha256(body).hexdigest()}\n".encode()
        try:
            atomic_write(self.path(key), header + body)
        except OSError as err:
            self.write_failed = f"{type(err).__name__}: {err.strerror or err}"
            warnings.warn(f"cannot write to the run store {self.root} ({self.write_failed}); carrying on without "
                          f"caching", CacheWriteWarning, stacklevel=2)
            return False
        return True

    def cached(self, parts: dict, compute: Callable[[], T], decode: Callable[[Any], Any] | None = None) -> T:
        """Return the stored payload for ``parts`` or compute, store and return it.

        ``decode`` (optional) turns a stored payload into the caller's object inside the verification: if it raises,
        the entry counts as corrupt and is recomputed. Parts that cannot be keyed (:class:`UncacheableError`) make
        the run uncached: computed, not stored, with an :class:`UncachedRunWarning` naming the reason.
        """
        if not self.enabled:
            value = compute()
            return decode(value) if decode is not None else value
        try:
            key = canonical_key(parts)
        except UncacheableError as err:
            warnings.warn(f"this run is not cached: {err}", UncachedRunWarning, stacklevel=2)
            value = compute()
            return decode(value) if decode is not None else value
        hit = self.get(key, decode)
        if hit is not None:
            return hit
        value = compute()
        self.put(key, value)
        return decode(value) if decode is not None else value

    def __contains__(self, parts: dict) -> bool:
        try:
            return self.enabled and self.path(canonical_key(parts)).is_file()
        except UncacheableError:
            return False

    def cleanup(self, max_age_seconds: float = 3600.0) -> int:
        """Remove temporary files that interrupted writes left behind: those whose writing process is gone, and any
        older than ``max_age_seconds``. Returns how many were removed."""
        if not self.root.is_dir():
            return 0
        return sum(remove_stale_temporaries(folder, max_age_seconds) for folder in self.root.iterdir()
                   if folder.is_dir())

    def clear(self) -> int:
        """Delete every entry (and leftover temporary files); returns how many entries were removed."""
        n = 0
        if self.root.exists():
            for f in self.root.glob("*/*.pt"):
                _remove(f)
                n += 1
            for f in self.root.glob("*/.*.tmp"):
                f.unlink(missing_ok=True)
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
        h.update(f"{name}|".encode())
        _hash_tensor(h, state[name])
    return h.hexdigest()[:32]
