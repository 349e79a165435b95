"""One canonical JSON and one configuration hash for every provenance record.

The canonical form: sorted keys, compact separators, no NaN/inf, floats in Python's
shortest exact repr (so 2/3 never hashes like 0.6667), dataclasses as their fields,
tuples as lists, enums as their value. Anything else is refused with a ``ConfigError``:
``json.dumps(default=str)`` would hash an object by its ``str``, which can differ between
processes (a default ``object.__repr__`` holds a memory address) and silently stop a
resumed run from recognising the slides it already finished.

This is byte-for-byte the form ``ingest.tissue`` used since the first release, so tissue
and tiling hashes already in stores are unchanged (see the store-migration note in
``ingest/pipeline/config.py``).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from infra.errors import ConfigError

__all__ = ["array_digest", "canonical_json", "stable_hash"]

HASH_CHARS = 16


def _canonical(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} cannot be hashed (not a finite number)")
        return value
    if isinstance(value, enum.Enum):
        return _canonical(value.value, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canonical(
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where
        )
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: mapping key {key!r} is not a string")
            out[key] = _canonical(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, PurePath):
        return value.as_posix()
    # numpy scalars: hash their exact Python value, never their printed form
    if (
        type(value).__module__ == "numpy"
        and hasattr(value, "item")
        and getattr(value, "ndim", 1) == 0
    ):
        return _canonical(value.item(), where)
    raise ConfigError(
        f"{where}: cannot hash a {type(value).__name__} into provenance; pass plain data "
        "(numbers, strings, lists, mappings, dataclasses)"
    )


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj`` (see the module docstring)."""
    return json.dumps(
        _canonical(obj, "config"), sort_keys=True, separators=(",", ":"), allow_nan=False
    )


def stable_hash(kind: str, version: int | str, obj: Any) -> str:
    """16 hex characters of SHA-256 over ``{"kind": kind, "version": version, **fields}``.

    ``kind`` and ``version`` keep two different things (or two algorithm versions) with
    equal parameters from ever sharing a hash. ``obj`` is a mapping or a dataclass.
    """
    fields = _canonical(obj, kind)
    if not isinstance(fields, dict):
        raise ConfigError(f"{kind}: provenance fields must be a mapping or dataclass")
    if "kind" in fields or "version" in fields:
        raise ConfigError(f"{kind}: 'kind' and 'version' are reserved provenance keys")
    payload = json.dumps(
        {"kind": kind, "version": version, **fields},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:HASH_CHARS]


def array_digest(array: Any, *, dtype: Any = None, with_shape: bool = False) -> str:
    """SHA-256 hex of an array's bytes in C order (a CuPy array is copied to the host).

    ``dtype`` casts first, so equal values give equal digests whatever dtype a caller
    holds; ``with_shape`` prefixes ``repr(shape)``, so a reshaped array differs. The
    digests stored so far (reference ids, codebook and graph keys) depend on these bytes:
    changing them orphans what is stored.
    """
    import numpy as np

    from infra.arrays import asnumpy

    host = np.ascontiguousarray(np.asarray(asnumpy(array), dtype))
    prefix = repr(host.shape).encode() if with_shape else b""
    return hashlib.sha256(prefix + host.tobytes()).hexdigest()
