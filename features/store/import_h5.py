"""Bring your own embeddings: CLAM/TRIDENT-style ``<slide_id>.h5`` files into a store.

Each file holds ``features`` (N, D) and ``coords`` (N, 2) level-0 (x, y) pixels of the
tiles' top-left corners, the layout :func:`features.store.export.to_h5_per_slide` writes.
The files carry no reliable scale (CLAM writes none, TRIDENT a magnification), so the
tiles' MPP and size are required settings, never guessed; a file whose own
``patch_size``/``patch_mpp`` attributes disagree with them is refused.

Every slide goes through the store's public write path (``write_slide`` with
:func:`~features.store.schema.tile_batch`, one ``commit`` at the end), so imported slides
are ordinary ``done`` slides. A bad file (unreadable, a missing dataset, mismatched
shapes, a file name that is not a slide id) is reported with its reason and the others
are imported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.store._keys import validate_encoder
from infra.errors import SlidebankError
from infra.ids import validate_slide_id
from infra.validate import positive

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["H5FileError", "H5ImportConfig", "H5ImportResult", "import_h5"]

log = logging.getLogger(__name__)


class H5FileError(SlidebankError, ValueError):
    """One ``.h5`` file that cannot be imported; the message names the file."""


@dataclass(frozen=True)
class H5ImportConfig:
    #: µm per pixel the tiles were read at (TRIDENT's 20x is about 0.5)
    mpp: float
    #: tile side in pixels at ``mpp``
    tile_size: int
    #: the encoder id the embeddings are stored under
    encoder: str
    #: the slides' level-0 µm per pixel (the ``coords`` unit); None: ``mpp`` (tiles read at level 0)
    slide_mpp: float | None = None

    def __post_init__(self) -> None:
        positive("H5ImportConfig.mpp", self.mpp)
        positive("H5ImportConfig.tile_size", self.tile_size)
        if self.slide_mpp is not None:
            positive("H5ImportConfig.slide_mpp", self.slide_mpp)
        validate_encoder(self.encoder)

    def config_hash(self) -> str:
        from features.store.runs import hash_config

        return hash_config(
            {
                "source": "h5",
                "mpp": self.mpp,
                "tile_size": self.tile_size,
                "slide_mpp": self.level0_mpp,
            }
        )

    @property
    def level0_mpp(self) -> float:
        return self.slide_mpp if self.slide_mpp is not None else self.mpp


@dataclass
class H5ImportResult:
    imported: list[str] = field(default_factory=list)
    tiles: int = 0
    #: file -> the reason it was not imported
    failed: dict[str, str] = field(default_factory=dict)


def import_h5(
    store: FeatureStore, paths: Iterable[str | Path], config: H5ImportConfig
) -> H5ImportResult:
    """Import ``paths`` (``<slide_id>.h5`` files) into ``store``; commits once at the end."""
    from features.store import SlideKey

    result = H5ImportResult()
    pending = []
    dim: int | None = None
    for path in sorted(Path(p) for p in paths):
        try:
            slide_id, features, coords = read_h5(path, config)
            if dim is not None and features.shape[1] != dim:
                raise H5FileError(
                    f"{path}: features have {features.shape[1]} dimensions, the files before it {dim}"
                )
            key = SlideKey(slide_id, config.encoder, config.config_hash())
            try:
                written = store.write_slide(
                    key, _info(path, config), [_tiles(features, coords, config)]
                )
            except (
                ValueError
            ) as exc:  # the store refuses it (e.g. another dimension than its table)
                raise H5FileError(f"{path}: {exc}") from exc
            pending.append(written)
            dim = features.shape[1]
        except H5FileError as exc:
            result.failed[str(path)] = str(exc)
            log.warning("%s", exc)
            continue
        result.imported.append(slide_id)
        result.tiles += len(features)
    if pending:
        store.commit(pending)
    return result


def read_h5(path: Path, config: H5ImportConfig) -> tuple[str, np.ndarray, np.ndarray]:
    """(slide id, features (N, D) float32, coords (N, 2) int64), or :class:`H5FileError`."""
    import h5py

    slide_id = _slide_id(path)
    try:
        with h5py.File(path, "r") as f:
            for name in ("features", "coords"):
                if name not in f:
                    raise H5FileError(f"{path}: no {name!r} dataset (has {sorted(f.keys())})")
            features = np.asarray(f["features"][()])
            coords_ds = f["coords"]
            coords = np.asarray(coords_ds[()])
            _check_attrs(path, dict(coords_ds.attrs), config)
    except OSError as exc:
        raise H5FileError(f"{path}: not a readable HDF5 file ({exc})") from exc
    return slide_id, _features(path, features), _coords(path, coords, len(features))


def _slide_id(path: Path) -> str:
    try:
        return validate_slide_id(path.stem)
    except ValueError as exc:
        raise H5FileError(f"{path}: the file name is not a slide id ({exc})") from exc


def _features(path: Path, features: np.ndarray) -> np.ndarray:
    if features.ndim == 3 and features.shape[0] == 1:  # CLAM writes (1, N, D) in some versions
        features = features[0]
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise H5FileError(
            f"{path}: features must be (N, D) with N, D >= 1, got shape {features.shape}"
        )
    if not np.issubdtype(features.dtype, np.floating) or not np.isfinite(features).all():
        raise H5FileError(f"{path}: features must be finite floats (dtype {features.dtype})")
    return features.astype(np.float32, copy=False)


def _coords(path: Path, coords: np.ndarray, n: int) -> np.ndarray:
    if coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if coords.shape != (n, 2):
        raise H5FileError(
            f"{path}: coords must be (N, 2) with N = {n} (the features' rows), got {coords.shape}"
        )
    if (
        not np.issubdtype(coords.dtype, np.number)
        or (coords < 0).any()
        or not np.isfinite(coords).all()
    ):
        raise H5FileError(f"{path}: coords must be non-negative level-0 pixel positions")
    if len(np.unique(coords, axis=0)) != n:
        raise H5FileError(f"{path}: coords repeat a tile position")
    return coords.astype(np.int64)


def _check_attrs(path: Path, attrs: dict[str, Any], config: H5ImportConfig) -> None:
    """A file that states its own tile size or MPP must agree with the settings (0 means unknown)."""
    size = int(attrs.get("patch_size", 0) or 0)
    if size and size != config.tile_size:
        raise H5FileError(
            f"{path}: its coords say patch_size {size}, not --tile-size {config.tile_size}"
        )
    mpp = float(attrs.get("patch_mpp", 0.0) or 0.0)
    if mpp and not np.isclose(mpp, config.mpp, rtol=1e-3):
        raise H5FileError(f"{path}: its coords say patch_mpp {mpp:g}, not --mpp {config.mpp:g}")


def _info(path: Path, config: H5ImportConfig) -> Any:
    from features.store import SlideInfo

    return SlideInfo(
        source_uri=path.resolve().as_uri(),
        size_bytes=path.stat().st_size,
        reader="h5-import",
        mpp=config.level0_mpp,
        mpp_source="override",
    )


def _tiles(features: np.ndarray, coords: np.ndarray, config: H5ImportConfig) -> Any:
    from features.store import tile_batch

    return tile_batch(
        coords[:, 0], coords[:, 1], features, tile_size=config.tile_size, read_mpp=config.mpp
    )
