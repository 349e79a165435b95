"""cuCIM backend: the default for TIFF-family slides (SVS, generic pyramidal TIFF).

Decodes on the GPU (nvJPEG) when one is present and ``device="cuda"`` is asked for;
on CPU it uses its own multi-threaded tile decoder and batched region reads, which is
why it ranks first where it can open the format. Local files only: remote slides are
staged to scratch first.

``read_regions_on(cupy, ...)`` keeps GPU-decoded pixels on the device: each batch the
reader yields is copied on the device at once, because cuCIM's batch iterator reuses its
buffer for the next batch. ``CucimReader.image_type`` is what opens a file (cuCIM's
``CuImage``; a stand-in decoder in tests, see ``cucim_standin``).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from infra import metrics
from infra.strict_device import ImplicitTransferError
from ingest.slides.base import BackendSlide, SlideReader

__all__ = ["CucimReader", "warm_up"]

log = logging.getLogger(__name__)
_WARM = {"done": False}


@functools.cache
def _warn_torch_first() -> None:
    log.warning(
        "cuCIM disabled in this process: PyTorch was imported before cuCIM, and "
        "cuCIM's initialisation then hangs; import cucim (or ingest.slides) first "
        "to use it. Falling back to OpenSlide/tiffslide."
    )


class _CucimSlide(BackendSlide):
    def __init__(self, image: Any, device: str, name: str = "") -> None:
        self._image = image
        self._device = device
        self._name = name  # the file's name, for the fallback warning
        res = image.resolutions
        self.level_dimensions = tuple((int(w), int(h)) for w, h in res["level_dimensions"])
        self.level_downsamples = tuple(float(d) for d in res["level_downsamples"])
        tiles = res.get("level_tile_sizes") or ()
        self.tile_size = (int(tiles[0][0]), int(tiles[0][1])) if tiles else None
        self.vendor_properties = {}

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        try:
            region = self._image.read_region((x, y), (width, height), level, device=self._device)
        except Exception as exc:
            if self._device == "cpu":
                raise
            self._fall_back_to_cpu(exc)
            region = self._image.read_region((x, y), (width, height), level, device="cpu")
        return _to_host_rgb(region)

    def read_region_on(self, xp: Any, x: int, y: int, level: int, width: int, height: int) -> Any:
        if self._device == "cpu" or xp is np:
            return super().read_region_on(xp, x, y, level, width, height)
        try:
            region = self._image.read_region((x, y), (width, height), level, device=self._device)
        except Exception as exc:
            self._fall_back_to_cpu(exc)
            return super().read_region_on(xp, x, y, level, width, height)
        return xp.ascontiguousarray(xp.array(region, copy=True)[..., :3])

    def read_regions_on(
        self,
        xp: Any,
        locations: Sequence[tuple[int, int]],
        level: int,
        size: tuple[int, int],
        threads: int = 1,
    ) -> Any:
        if self._device == "cpu" or xp is np:
            return super().read_regions_on(xp, locations, level, size, threads)
        width, height = size
        out = xp.empty((len(locations), height, width, 3), dtype=np.uint8)
        if not len(locations):
            return out
        try:
            batches = self._batches(locations, level, size, threads)
            start = 0
            for region in batches:
                arr = xp.asarray(region)  # a view of the reader's buffer, reused next batch
                if arr.ndim == 3:
                    arr = arr[None]
                out[start : start + len(arr)] = arr[..., :3]  # so copy it now, on the device
                start += len(arr)
            return out
        except ImplicitTransferError:
            raise  # a host round trip in this code, not a decoder failure
        except Exception as exc:
            self._fall_back_to_cpu(exc)
            return super().read_regions_on(xp, locations, level, size, threads)

    def _fall_back_to_cpu(self, exc: Exception) -> None:
        # nvJPEG cannot decode every JPEG variant (e.g. some Aperio RGB-colourspace tiles);
        # decoding on the CPU is slower but correct, so switch once and say so, once per
        # slide, and count it: a run whose slides all fall back is a CPU run on a GPU.
        log.warning(
            "cuCIM GPU decode failed on %s (%s: %s); decoding this slide on the CPU",
            self._name or "a slide",
            type(exc).__name__,
            exc,
        )
        metrics.record_decode_fallback()
        self._device = "cpu"

    def read_regions(
        self,
        locations: Sequence[tuple[int, int]],
        level: int,
        size: tuple[int, int],
        threads: int = 1,
    ) -> np.ndarray:
        width, height = size
        out = np.empty((len(locations), height, width, 3), np.uint8)
        if not len(locations):
            return out
        try:
            return self._read_batches(locations, level, size, threads, out)
        except Exception as exc:
            if self._device == "cpu":
                raise
            self._fall_back_to_cpu(exc)
            return self._read_batches(locations, level, size, threads, out)

    def _batches(
        self, locations: Sequence[tuple[int, int]], level: int, size: tuple[int, int], threads: int
    ) -> Any:
        return self._image.read_region(
            [(int(x), int(y)) for x, y in locations],
            tuple(size),
            level,
            num_workers=max(threads, 1),
            batch_size=32,
            device=self._device,
        )

    def _read_batches(self, locations, level, size, threads, out) -> np.ndarray:
        start = 0
        for region in self._batches(locations, level, size, threads):
            arr = _to_host_rgb(region)
            if arr.ndim == 3:
                arr = arr[None]
            out[start : start + len(arr)] = arr
            start += len(arr)
        return out

    def close(self) -> None:
        close = getattr(self._image, "close", None)
        if callable(close):
            close()


def _to_host_rgb(region: Any) -> np.ndarray:
    # CUDA memory, or the strict device stand-in's (which refuses np.asarray)
    if (
        hasattr(region, "__cuda_array_interface__")
        or type(region).__module__ == "infra.strict_device"
    ):
        from infra.arrays import asnumpy, get_xp

        arr = asnumpy(get_xp("cuda").asarray(region))
    else:
        arr = np.asarray(region)
    return np.ascontiguousarray(arr[..., :3])


class CucimReader(SlideReader):
    name = "cucim"
    extensions: ClassVar[dict[str, int]] = {".svs": 100, ".tif": 100, ".tiff": 100}
    supports_remote = False
    supports_gpu_decode = True
    tiff_only = True
    #: opens a local file as a cuCIM ``CuImage`` (None: cuCIM's own; see module docstring)
    image_type: ClassVar[Callable[[str], Any] | None] = None

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    @classmethod
    def is_available(cls) -> bool:
        if not _WARM["done"] and "torch" in sys.modules:
            # cuCIM's cuFile initializer spins forever (a libstdc++ getline loop inside
            # cuFileDriverOpen) when PyTorch was imported first in the process. Never hang:
            # treat cuCIM as unavailable here; OpenSlide reads the same formats.
            _warn_torch_first()
            return False
        try:
            from cucim import CuImage  # type: ignore[attr-defined]  # noqa: F401
        except Exception:  # a broken CUDA runtime surfaces as many exception types
            return False
        return True

    def open_local(self, path: str) -> BackendSlide:
        opener = CucimReader.image_type
        if opener is None:
            from cucim import CuImage  # type: ignore[attr-defined]

            opener = CuImage
        slide = _CucimSlide(opener(path), self.device, os.path.basename(path))
        _WARM["done"] = True  # its plugins are loaded: PyTorch can no longer hurt it
        return slide


def warm_up() -> bool:
    """Load cuCIM and its TIFF plugin now, before anything imports PyTorch.

    The plugin is loaded on the first open and its cuFile initializer is what hangs
    after PyTorch; opening a tiny temporary TIFF here gets that over with.
    """
    if _WARM["done"]:
        return True
    if "torch" in sys.modules:
        return False
    import numpy as np
    import tifffile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "warm.tif")
            tifffile.imwrite(
                path, np.zeros((16, 16, 3), np.uint8), tile=(16, 16), photometric="rgb"
            )
            CucimReader().open_local(path).close()
    except Exception as exc:  # cuCIM unusable here: the registry will skip it
        log.info("cuCIM warm-up failed: %s", exc)
        return False
    return True
