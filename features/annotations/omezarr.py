"""OME-Zarr label images in (OME-NGFF ``image-label``, 0.4 on Zarr v2 and 0.5 on v3).

In: a label image is a mask whose MPP comes from its ``multiscales`` metadata (the
``scale`` of the chosen level, in the axes' unit, converted to µm), so no ``--mask-mpp``
is needed; one given must agree with the metadata within 1 %. The path may be the
label image itself, a ``labels`` group (the only label, or an error naming them), or an
image with a ``labels`` group. The finest level whose sides fit ``MAX_SIDE`` pixels is
read, so a label image at full slide resolution is read at a pyramid level instead.
Class names and colours come from ``image-label`` ``properties`` and ``colors``.
The label array then goes through :func:`features.annotations.masks.mask_annotations`
(polygons along pixel edges, the mask's span checked against the slide).

Out: :mod:`features.annotations.omezarr_export` (it reads slides through the store
module, which imports this one to read label images).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.annotations._errors import AnnotationFormatError, MaskMPPError
from features.annotations.model import AnnotationSet

if TYPE_CHECKING:
    pass

__all__ = ["MAX_SIDE", "is_ome_zarr", "ome_attrs", "read_label_image", "read_ome_zarr_mask"]

log = logging.getLogger(__name__)

MAX_SIDE = 16384
_UNITS_UM = {
    "angstrom": 1e-4,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
}
_NAME_KEYS = ("class", "name", "label", "label-name")
_MPP_RELATIVE = 0.01


def is_ome_zarr(path: str | Path) -> bool:
    """A folder holding a Zarr v2 or v3 group."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in ("zarr.json", ".zgroup", ".zattrs"))


def ome_attrs(group: Any) -> dict[str, Any]:
    """The OME-NGFF attributes of a group: under ``ome`` (0.5) or at the top (0.4)."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, Mapping) else attrs


def _label_group(source: str, root: Any) -> Any:
    """The label image a path names: itself, the only entry of a labels group, or of an
    image's ``labels`` child."""
    meta = ome_attrs(root)
    if "multiscales" in meta:
        return root
    group = root
    if "labels" not in meta and "labels" in root:
        group, meta = root["labels"], ome_attrs(root["labels"])
    names = meta.get("labels")
    if not isinstance(names, list) or not names:
        raise AnnotationFormatError(
            f"{source}: not an OME-Zarr label image (no multiscales or labels metadata)"
        )
    if len(names) > 1:
        raise AnnotationFormatError(
            f"{source}: holds labels {', '.join(map(str, names))}; "
            f"give the path of one, e.g. {source}/labels/{names[0]}"
        )
    return group[str(names[0])]


def _level_scale(
    source: str, multiscale: Mapping[str, Any], dataset: Mapping[str, Any], axes: list[str]
) -> list[float]:
    scale = [1.0] * len(axes)
    for transforms in (
        dataset.get("coordinateTransformations") or [],
        multiscale.get("coordinateTransformations") or [],
    ):
        for t in transforms:
            if t.get("type") == "scale":
                if len(t.get("scale", [])) != len(axes):
                    raise AnnotationFormatError(
                        f"{source}: a scale of {t.get('scale')} for axes {axes}"
                    )
                scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
    return scale


def _mpp(
    source: str, axes_meta: list[Mapping[str, Any]], scale: list[float], given: float | None
) -> float:
    """µm per pixel of the level (x and y must agree), or ``given`` without units."""
    names = [a.get("name") for a in axes_meta]
    units = [axes_meta[names.index(a)].get("unit") for a in ("y", "x")]
    if any(u is None for u in units):
        if given is None:
            raise MaskMPPError(
                f"{source}: the label image's y/x axes have no unit, so its "
                "MPP is unknown; give it (mask_mpp / --mask-mpp)"
            )
        return given
    if any(u not in _UNITS_UM for u in units):
        raise MaskMPPError(
            f"{source}: unknown axis unit(s) {units}; expected one of {', '.join(_UNITS_UM)}"
        )
    my, mx = (scale[names.index(a)] * _UNITS_UM[str(u)] for a, u in zip("yx", units, strict=True))
    if not (mx > 0 and my > 0) or abs(mx - my) > _MPP_RELATIVE * max(mx, my):
        raise MaskMPPError(
            f"{source}: pixels of {mx:g} x {my:g} µm; only square pixels can be placed on a slide"
        )
    mpp = (mx + my) / 2
    if given is not None and abs(given - mpp) > _MPP_RELATIVE * mpp:
        raise MaskMPPError(
            f"{source}: mask MPP {given} given, but its metadata says "
            f"{mpp:g} µm/px at the level read"
        )
    return mpp


def _pick_level(source: str, group: Any, datasets: list[Mapping[str, Any]]) -> int:
    for index, dataset in enumerate(datasets):
        shape = group[str(dataset["path"])].shape
        if max(shape[-2:]) <= MAX_SIDE:
            if index:
                log.info(
                    "%s: reading level %d (%s); level 0 exceeds %d px",
                    source,
                    index,
                    "x".join(map(str, shape)),
                    MAX_SIDE,
                )
            return index
    raise AnnotationFormatError(f"{source}: every level is larger than {MAX_SIDE} px a side")


def _plane(source: str, array: Any, axes: list[str]) -> np.ndarray:
    """The (y, x) plane of a label array whose other axes have size 1."""
    if "y" not in axes or "x" not in axes:
        raise AnnotationFormatError(f"{source}: axes {axes} lack y and x")
    extra = [a for a, n in zip(axes, array.shape, strict=True) if a not in ("y", "x") and n != 1]
    if extra:
        raise AnnotationFormatError(
            f"{source}: axes {extra} have more than one plane; a "
            "label image for a slide is one (y, x) plane"
        )
    data = np.asarray(array[...])
    keep = [axes.index("y"), axes.index("x")]
    data = np.moveaxis(data, keep, [-2, -1]).reshape(data.shape[keep[0]], data.shape[keep[1]])
    if not np.issubdtype(data.dtype, np.integer):
        raise AnnotationFormatError(f"{source}: label pixels must be integers, not {data.dtype}")
    return data


def _properties(meta: Mapping[str, Any]) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    label = meta.get("image-label") or {}
    names: dict[int, str] = {}
    for prop in label.get("properties") or []:
        value = prop.get("label-value")
        name = next((prop[k] for k in _NAME_KEYS if isinstance(prop.get(k), str)), None)
        if isinstance(value, int) and name:
            names[value] = name
    colors = {
        int(c["label-value"]): (int(c["rgba"][0]), int(c["rgba"][1]), int(c["rgba"][2]))
        for c in label.get("colors") or []
        if isinstance(c.get("label-value"), int) and len(c.get("rgba") or []) >= 3
    }
    return names, colors


def read_label_image(
    path: str | Path, mask_mpp: float | None = None
) -> tuple[np.ndarray, float, dict[int, str], dict[int, tuple[int, int, int]]]:
    """(labels (y, x), µm per label pixel, class names, colours) of an OME-Zarr label image."""
    import zarr

    source = str(path)
    try:
        root = zarr.open_group(source, mode="r")
    except (FileNotFoundError, ValueError) as exc:  # GroupNotFoundError is both
        raise AnnotationFormatError(f"{source}: not a readable Zarr group ({exc})") from exc
    group = _label_group(source, root)
    meta = ome_attrs(group)
    multiscale = (meta.get("multiscales") or [None])[0]
    if not isinstance(multiscale, Mapping) or not multiscale.get("datasets"):
        raise AnnotationFormatError(f"{source}: multiscales metadata without datasets")
    axes_meta = [a if isinstance(a, Mapping) else {"name": a} for a in multiscale["axes"]]
    axes = [str(a["name"]) for a in axes_meta]
    level = _pick_level(source, group, multiscale["datasets"])
    dataset = multiscale["datasets"][level]
    scale = _level_scale(source, multiscale, dataset, axes)
    mpp = _mpp(source, axes_meta, scale, mask_mpp)
    names, colors = _properties(meta)
    return _plane(source, group[str(dataset["path"])], axes), mpp, names, colors


def read_ome_zarr_mask(
    path: str | Path,
    *,
    slide_mpp: float | None,
    slide_size: tuple[int, int],
    mask_mpp: float | None = None,
    labels: Mapping[int, str] | None = None,
) -> AnnotationSet:
    """Annotations from an OME-Zarr label image (names from ``labels`` over its own)."""
    from features.annotations.masks import mask_annotations

    array, mpp, names, colors = read_label_image(path, mask_mpp)
    present = {int(v) for v in np.unique(array) if v != 0}
    chosen = (
        dict(labels)
        if labels is not None
        else ({v: names[v] for v in present} if present and present <= names.keys() else None)
    )
    return mask_annotations(
        str(path),
        array,
        mask_mpp=mpp,
        slide_mpp=slide_mpp,
        slide_size=slide_size,
        labels=chosen,
        colors=colors,
    )
