"""Safe, atomic, verified checkpoints and reproducible random-number state.

File layout (format version 1)::

    BAYESNEST-CHECKPOINT\\n            magic line
    {"format_version": 1, ...}\\n       one line of JSON metadata (kind, versions, size, digest)
    <payload>                           torch.save of the payload dict

The metadata holds the SHA-256 digest of the metadata line (without the digest) followed by the
payload bytes, so truncation and any flipped byte are detected before anything is unpickled;
the payload is then read with ``torch.load(weights_only=True)``, which only rebuilds tensors
and plain containers. Writes go to a temporary file in the target directory, are flushed and
fsync'ed, and replace the target with ``os.replace`` (or, for an exclusive write, are hard-linked
to it, failing if it appeared meanwhile): a crash leaves the old file intact, and the next write
to the same target removes the temporary file a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import random
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_write, require_file

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "checkpoint_info",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "stamped",
]

FORMAT_VERSION = 1
_MAGIC = b"BAYESNEST-CHECKPOINT\n"
_MAX_HEADER = 1 << 16
_SCALARS = (bool, int, float, str, type(None), torch.dtype, torch.device, torch.Size)


class CheckpointError(ValueError):
    """A checkpoint file is missing, not a checkpoint, truncated, tampered with, of an
    unsupported format version, or of the wrong kind."""


def _package_version() -> str:
    try:
        from bayes_nest import __version__

        return str(__version__)
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        return version("bayes_nest")
    except Exception:  # not installed: running from a source tree
        return "unknown"


def _check_payload(obj: Any, where: str) -> None:
    """Reject anything ``torch.load(weights_only=True)`` could not rebuild, naming its path."""
    if torch.is_tensor(obj) or isinstance(obj, _SCALARS):
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}: use str or int")
            _check_payload(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_payload(value, f"{where}[{i}]")
        return
    hint = " (convert with torch.as_tensor)" if isinstance(obj, (np.ndarray, np.generic)) else ""
    raise TypeError(
        f"{where} has type {type(obj).__name__}{hint}; checkpoints hold only tensors, dicts, "
        "lists, tuples, numbers, strings and None"
    )


_STAMPS: dict[str, dict[str, Any]] = {}


def _stamp_key(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


@contextlib.contextmanager
def stamped(path: str | os.PathLike, extra: dict[str, Any]) -> Iterator[None]:
    """Within the block, every checkpoint written to ``path`` by :func:`save_checkpoint`
    (e.g. by a trainer, after every epoch) carries ``extra`` in its metadata line.

    This records facts the writer does not know, such as the settings of the run that
    produced the checkpoint, so that a resumed run can be checked against them
    (``checkpoint_info(path)["extra"]``).
    """
    key = _stamp_key(path)
    previous = _STAMPS.get(key)
    _STAMPS[key] = json.loads(json.dumps(extra))  # JSON-serialisable, and a private copy
    try:
        yield
    finally:
        if previous is None:
            _STAMPS.pop(key, None)
        else:
            _STAMPS[key] = previous


def _digest(meta: dict[str, Any], payload: bytes) -> str:
    body = json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True)
    return hashlib.sha256(body.encode() + b"\n" + payload).hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    payload: dict[str, Any],
    *,
    kind: str,
    exclusive: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``payload`` to ``path`` atomically and return the path.

    Parameters
    ----------
    path : str or path-like
        Target file; missing parent directories are created.
    payload : dict
        Only tensors, (ordered) dicts, lists, tuples, numbers, strings, None, torch dtypes,
        devices and sizes: e.g. ``module.state_dict()``, ``optimizer.state_dict()``,
        :func:`rng_state`, configuration dicts.
    kind : str
        What the checkpoint holds (e.g. ``"fn3"``, ``"bnnn"``); :func:`load_checkpoint` can
        insist on it.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    _check_payload(payload, "payload")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "package_version": _package_version(),
        "torch_version": torch.__version__,
        "payload_bytes": len(data),
    }
    stamp = extra if extra is not None else _STAMPS.get(_stamp_key(path))
    if stamp is not None:
        meta["extra"] = json.loads(json.dumps(stamp))
    meta["sha256"] = _digest(meta, data)
    header = json.dumps(meta, sort_keys=True).encode() + b"\n"
    atomic_write(path, _MAGIC + header + data, exclusive=exclusive, mode=0o666)
    return Path(path)


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    path = Path(path)
    if not path.is_file():
        try:
            require_file(path, "checkpoint")
        except (OSError, ValueError) as e:
            raise CheckpointError(str(e)) from None
    raw = path.read_bytes()
    if not raw.startswith(_MAGIC):
        if _MAGIC.startswith(raw[: len(_MAGIC)]) and raw:
            raise CheckpointError(f"{path} is truncated (inside the file header)")
        raise CheckpointError(f"{path} is not a bayes_nest checkpoint (no checkpoint header)")
    end = raw.find(b"\n", len(_MAGIC), len(_MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CheckpointError(f"{path} is truncated or corrupt (incomplete metadata line)")
    try:
        meta = json.loads(raw[len(_MAGIC) : end])
        version, size, digest = meta["format_version"], meta["payload_bytes"], meta["sha256"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path} has corrupt metadata (tampered or damaged)") from None
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{path} has format version {version!r}; this bayes_nest reads versions up to "
            f"{FORMAT_VERSION} (written by bayes_nest {meta.get('package_version', '?')})"
        )
    data = raw[end + 1 :]
    if isinstance(size, int) and len(data) < size:
        raise CheckpointError(f"{path} is truncated ({len(data)} of {size} payload bytes)")
    if _digest(meta, data) != digest:
        raise CheckpointError(f"{path} failed its SHA-256 check (tampered or corrupted)")
    return meta, data


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """Verified metadata of a checkpoint (format version, kind, package and torch versions,
    payload size, digest) without unpickling its payload."""
    return _read(path)[0]


def load_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    map_location: Any = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and return its payload dict.

    The file is verified (header, format version, kind, length, SHA-256) before the payload is
    read with ``torch.load(weights_only=True)``.

    Raises
    ------
    CheckpointError
        Missing file, not a checkpoint, truncated, digest mismatch, newer format version, or a
        kind other than ``kind`` (when given).
    """
    meta, data = _read(path)
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} checkpoint, expected {kind!r}")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # digest matched, so the writer stored something unloadable
        unsafe = isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e).lower()
        if unsafe:  # never pass on torch's advice to load it with weights_only=False
            raise CheckpointError(
                f"{path} is not a trusted bayes_nest checkpoint: its payload holds objects "
                "other than tensors and plain containers, which are never loaded (the file "
                "was not written by bayes_nest, or was altered)"
            ) from None
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} payload could not be read: {msg}") from None


# ----------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Capture the global random state of torch (CPU and CUDA), numpy's legacy generator and
    Python's ``random`` as tensors and numbers, ready for :func:`save_checkpoint`.

    Pyro draws from these same generators (``pyro.set_rng_seed`` seeds exactly these), so
    restoring them with :func:`set_rng_state` makes Pyro's sampling resume identically.
    ``numpy.random.Generator`` objects hold private state and are not covered.
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.as_tensor(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore random state captured by :func:`rng_state` (possibly through a checkpoint)."""
    missing = {"torch", "numpy", "python"} - set(state) if isinstance(state, dict) else None
    if missing is None or missing:
        raise ValueError(f"state must be a dict from rng_state(); missing {sorted(missing or [])}")
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    n = state["numpy"]
    keys = np.asarray(torch.as_tensor(n["keys"]).cpu().numpy(), dtype=np.uint32)
    np.random.set_state(  # noqa: NPY002
        ("MT19937", keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
    )
    p = state["python"]
    internal = tuple(int(v) for v in torch.as_tensor(p["internal"]).tolist())
    random.setstate((int(p["version"]), internal, p["gauss_next"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s).cpu() for s in state["torch_cuda"]])
