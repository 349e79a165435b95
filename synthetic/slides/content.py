"""Procedural H&E-like tissue, evaluated anywhere on the slide without a whole-slide array.

Everything is defined in physical units (micrometres) so that a slide written at
0.25 µm/px and one at 0.5 µm/px show the same tissue. Colours come from Beer-Lambert
mixing of hematoxylin and eosin optical densities, so stain-normalization code sees
realistic stain vectors. A region can be rendered at any pyramid downsample; nuclei
are drawn individually where they span pixels and averaged where they do not.

Ground truth: tissue is where the blob field is positive and no pen ink or scanner
artifact (border, coverslip edge, bubble rim) lies on top. Optional lymphocyte
aggregates (dense, small, dark, round nuclei: an immune infiltrate) are planted content
with their own ground truth, so a model's attention can be checked against them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["E_OD", "H_OD", "ArtifactDesign", "TissueContent", "TissueDesign"]

# Unit optical-density vectors (RGB) of hematoxylin and eosin; the standard published
# H&E reference directions, so normalizers fitted on these slides behave as on real ones.
H_OD = np.array([0.5626, 0.7201, 0.4062])
E_OD = np.array([0.2159, 0.8012, 0.5581])
_INK_OD = {
    "blue": np.array([1.10, 0.55, 0.05]),
    "green": np.array([1.00, 0.20, 0.90]),
    "black": np.array([1.40, 1.40, 1.35]),
    "red": np.array([0.05, 1.10, 0.85]),
}
# Scanner artifacts absorb about equally in R, G and B: they carry no stain colour.
_BORDER_OD = np.array([2.30, 2.30, 2.25])  # the black beyond the glass
_EDGE_OD = np.array([0.46, 0.44, 0.42])  # a coverslip edge, grey
_RIM_OD = np.array([0.58, 0.56, 0.55])  # the refracting rim of an air bubble
_GLASS = 241.0
_CELL_UM = 12.0  # one candidate nucleus per 12 µm grid cell
# Lymphocytes: ~7 µm round nuclei packed nearly touching (a dense infiltrate), one
# candidate per 7.5 µm cell, stained about twice as strongly as tumour or stroma nuclei.
_LYMPH_CELL_UM = 7.5
_LYMPH_PRESENT = 0.85
_LYMPH_RADIUS_UM = (3.2, 3.9)
_LYMPH_CONC = (1.3, 1.6)


@dataclass(frozen=True)
class ArtifactDesign:
    """Optional scanner artifacts, in micrometres. None of them is tissue."""

    border: tuple[str, float] | None = None  # side ("left", "right", "top", "bottom"), width
    glass_edge: tuple[np.ndarray, float] | None = None  # (2, 2) straight line, width
    bubbles: tuple[tuple[float, float, float, float], ...] = ()  # cx, cy, radius, rim width

    def __bool__(self) -> bool:
        return self.border is not None or self.glass_edge is not None or bool(self.bubbles)


@dataclass(frozen=True)
class TissueDesign:
    """Random layout of one synthetic slide, all positions in micrometres."""

    width_um: float
    height_um: float
    blobs: np.ndarray  # (K, 6): cx, cy, a, b, angle, stain scale
    noise: np.ndarray  # coarse lattice that roughens blob boundaries
    noise_step_um: float
    pen: tuple[tuple[str, np.ndarray, float], ...]  # (ink, (N, 2) polyline, width_um)
    blur: tuple[float, float, float] | None  # cx, cy, radius (µm) of an out-of-focus area
    fold: tuple[np.ndarray, float] | None  # polyline and width (µm) of a tissue fold
    seed: int
    extras: dict = field(default_factory=dict)
    artifacts: ArtifactDesign = field(default_factory=ArtifactDesign)
    # Lymphocyte aggregates: (cx, cy, radius) discs in µm, boundaries roughened by noise.
    lymphocytes: tuple[tuple[float, float, float], ...] = ()
    # Scattered lymphocytes over all tissue: the share of candidate cells that hold one.
    lymphocyte_background: float = 0.0


def _hash01(i: np.ndarray, j: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Deterministic uniform [0, 1) per integer lattice point (splitmix64 mixing)."""
    with np.errstate(over="ignore"):
        z = (i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
            j.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        z ^= np.uint64((seed * 0x165667B1 + salt * 0x27D4EB2F) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _polyline_distance(
    px: np.ndarray, py: np.ndarray, line: np.ndarray, reach: float = np.inf
) -> np.ndarray:
    """Distance (µm) from each point to a polyline; segments farther than ``reach`` skipped."""
    best = np.full(px.shape, np.inf)
    if px.size == 0:
        return best
    qx0, qx1, qy0, qy1 = px.min() - reach, px.max() + reach, py.min() - reach, py.max() + reach
    for (x0, y0), (x1, y1) in itertools.pairwise(line):
        if max(x0, x1) < qx0 or min(x0, x1) > qx1 or max(y0, y1) < qy0 or min(y0, y1) > qy1:
            continue  # the segment's box misses the query box grown by reach
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        best = np.minimum(best, np.hypot(px - (x0 + t * dx), py - (y0 + t * dy)))
    return best


class TissueContent:
    """Evaluates the synthetic slide's pixels and ground truth for any region."""

    def __init__(self, design: TissueDesign) -> None:
        self.design = design

    # ---- fields in micrometre coordinates -------------------------------------------
    def _lattice_noise(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        lattice, step = self.design.noise, self.design.noise_step_um
        gx, gy = x / step, y / step
        # Periodic lattice: any coordinate (also scaled ones, for finer grain) is valid.
        ny, nx = lattice.shape
        fx0, fy0 = np.floor(gx), np.floor(gy)
        fx, fy = gx - fx0, gy - fy0
        ix, iy = fx0.astype(np.int64) % nx, fy0.astype(np.int64) % ny
        ix1, iy1 = (ix + 1) % nx, (iy + 1) % ny
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        top = lattice[iy, ix] * (1 - fx) + lattice[iy, ix1] * fx
        bottom = lattice[iy1, ix] * (1 - fx) + lattice[iy1, ix1] * fx
        return top * (1 - fy) + bottom * fy

    def blob_field(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed tissue field (> 0 inside) and the stain scale of the nearest blob."""
        best = np.full(x.shape, -np.inf)
        scale = np.ones(x.shape)
        for cx, cy, a, b, angle, stain in self.design.blobs:
            c, s = math.cos(angle), math.sin(angle)
            u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
            value = 1.0 - np.sqrt((u / a) ** 2 + (v / b) ** 2)
            better = value > best
            best = np.where(better, value, best)
            scale = np.where(better, stain, scale)
        return best + 0.22 * self._lattice_noise(x, y), scale

    def pen_od(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ink optical density (…, 3) and a boolean pen mask."""
        od = np.zeros((*x.shape, 3))
        mask = np.zeros(x.shape, bool)
        for ink, line, width in self.design.pen:
            d = _polyline_distance(x, y, line, reach=width / 2 + 4.0)
            weight = np.clip((width / 2 - d) / 4.0 + 0.5, 0, 1)  # 4 µm soft edge
            od += weight[..., None] * _INK_OD[ink]
            mask |= weight > 0.5
        return od, mask

    def artifact_od(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Optical density (…, 3) of scanner artifacts and a boolean artifact mask."""
        art = self.design.artifacts
        od = np.zeros((*x.shape, 3))
        mask = np.zeros(x.shape, bool)
        if art.border is not None:
            side, width = art.border
            inset = {
                "left": x,
                "top": y,
                "right": self.design.width_um - x,
                "bottom": self.design.height_um - y,
            }[side]
            weight = np.clip((width - inset) / 2.0 + 0.5, 0, 1)  # 2 µm soft edge
            od += weight[..., None] * _BORDER_OD
            mask |= weight > 0.5
        if art.glass_edge is not None:
            line, width = art.glass_edge
            d = _polyline_distance(x, y, line, reach=width / 2 + 3.0)
            weight = np.clip((width / 2 - d) / 3.0 + 0.5, 0, 1)
            od += weight[..., None] * _EDGE_OD
            mask |= weight > 0.5
        for cx, cy, radius, rim in art.bubbles:
            d = np.abs(np.hypot(x - cx, y - cy) - radius)
            weight = np.clip((rim / 2 - d) / 3.0 + 0.5, 0, 1)
            od += weight[..., None] * _RIM_OD
            mask |= weight > 0.5
        return od, mask

    def hidden_by_border(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Points under the scanner border: nothing of the slide is imaged there."""
        border = self.design.artifacts.border
        if border is None:
            return np.zeros(x.shape, bool)
        side, width = border
        inset = {
            "left": x,
            "top": y,
            "right": self.design.width_um - x,
            "bottom": self.design.height_um - y,
        }[side]
        return inset < width

    def tissue_mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground truth at the given points: tissue, not under pen ink or the scanner border.

        A coverslip edge or a bubble rim crossing a section lies on top of tissue that
        is still there (and still counts); on glass they are simply not tissue.
        """
        tissue = self.blob_field(x, y)[0] > 0
        if self.design.pen:
            tissue &= ~self.pen_od(x, y)[1]
        if self.design.artifacts:
            tissue &= ~self.hidden_by_border(x, y)
        return tissue

    def lymphocyte_field(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed field of the lymphocyte aggregates (> 0 inside one); -1 with none."""
        best = np.full(x.shape, -1.0)
        for cx, cy, r in self.design.lymphocytes:
            best = np.maximum(best, 1.0 - np.hypot(x - cx, y - cy) / r)
        if not self.design.lymphocytes:
            return best
        # Irregular borders, as infiltrates have; its own noise offset from the tissue's.
        return best + 0.12 * self._lattice_noise(x * 2.3 + 300, y * 2.3 + 300)

    def lymphocyte_mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground truth of the planted infiltrate: inside an aggregate and on tissue."""
        if not self.design.lymphocytes:
            return np.zeros(x.shape, bool)
        return (self.lymphocyte_field(x, y) > 0) & self.tissue_mask(x, y)

    def is_glass(self, x0: float, y0: float, w_um: float, h_um: float) -> bool:
        """True when a region certainly shows only glass (no tissue, ink, fold or blur).

        Samples the tissue field on a 9×9 grid with a safety margin larger than the field
        can change between samples, so a True answer is never wrong for tissue; it lets the
        writer reuse one glass tile for most of a large slide.
        """
        xs = np.linspace(x0, x0 + w_um, 9)
        ys = np.linspace(y0, y0 + h_um, 9)
        x, y = np.meshgrid(xs, ys)
        step = max(w_um, h_um) / 8
        margin = 0.05 + 1.5 * step / float(np.min(self.design.blobs[:, 3]))
        if self.blob_field(x, y)[0].max() > -margin:
            return False
        for _, line, width in self.design.pen:
            reach = width / 2 + step + 8.0
            if np.isfinite(_polyline_distance(x, y, line, reach)).any():
                return False
        return not self._near_artifact(x0, y0, w_um, h_um)

    def _near_artifact(self, x0: float, y0: float, w_um: float, h_um: float) -> bool:
        """True when an artifact may touch the region (exact box tests, with margins)."""
        art = self.design.artifacts
        if art.border is not None:
            side, width = art.border
            reach = width + 4.0
            if {
                "left": x0 < reach,
                "top": y0 < reach,
                "right": x0 + w_um > self.design.width_um - reach,
                "bottom": y0 + h_um > self.design.height_um - reach,
            }[side]:
                return True
        if art.glass_edge is not None:
            line, width = art.glass_edge
            cx, cy = x0 + w_um / 2, y0 + h_um / 2
            d = _polyline_distance(np.array([cx]), np.array([cy]), line)[0]
            if d <= math.hypot(w_um, h_um) / 2 + width / 2 + 6.0:
                return True
        for cx, cy, radius, rim in art.bubbles:
            nx, ny = min(max(cx, x0), x0 + w_um), min(max(cy, y0), y0 + h_um)
            far = max(math.hypot(cx - x, cy - y) for x in (x0, x0 + w_um) for y in (y0, y0 + h_um))
            reach = rim / 2 + 6.0
            if math.hypot(nx - cx, ny - cy) <= radius + reach and far >= radius - reach:
                return True
        return False

    # ---- rendering ---------------------------------------------------------------------
    def render(self, x0: float, y0: float, w: int, h: int, pixel_um: float) -> np.ndarray:
        """RGB uint8 (h, w, 3) of the region whose top-left pixel edge is at (x0, y0) µm."""
        blur = self.design.blur
        margin = 0
        if blur is not None:
            cx, cy, r = blur
            if _box_near_disc(x0, y0, w * pixel_um, h * pixel_um, cx, cy, r + 20):
                margin = int(math.ceil(6.0 / pixel_um)) + 1
        od = self._render_od(
            x0 - margin * pixel_um, y0 - margin * pixel_um, w + 2 * margin, h + 2 * margin, pixel_um
        )
        if margin:
            od = self._apply_blur(od, x0 - margin * pixel_um, y0 - margin * pixel_um, pixel_um)
            od = od[margin : margin + h, margin : margin + w]
        rgb = _GLASS * np.exp(-od)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def render_glass(self, w: int, h: int) -> np.ndarray:
        """Empty glass with the same sensor noise statistics as rendered regions."""
        i, j = np.meshgrid(np.arange(w), np.arange(h))
        noise = (_hash01(i, j, self.design.seed, 98)[..., None] - 0.5) * 0.012
        rgb = np.clip(np.rint(_GLASS * np.exp(-noise)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.broadcast_to(rgb, (h, w, 3)))

    def _grid(self, x0: float, y0: float, w: int, h: int, pixel_um: float):
        xs = x0 + (np.arange(w) + 0.5) * pixel_um
        ys = y0 + (np.arange(h) + 0.5) * pixel_um
        return np.meshgrid(xs, ys)

    def _render_od(self, x0: float, y0: float, w: int, h: int, pixel_um: float) -> np.ndarray:
        x, y = self._grid(x0, y0, w, h, pixel_um)
        field_value, stain_scale = self.blob_field(x, y)
        tissue = np.clip(field_value / 0.02, 0, 1)  # ~soft boundary
        grain = self._lattice_noise(x * 7.3 + 1000, y * 7.3 + 1000)
        eosin = (0.30 + 0.12 * grain) * tissue
        nuclei = self._nuclei(x0, y0, w, h, pixel_um)
        if self.design.lymphocytes or self.design.lymphocyte_background > 0:
            nuclei = np.maximum(nuclei, self._lymphocytes(x0, y0, w, h, pixel_um))
        hema = 0.04 * tissue + nuclei * tissue
        if self.design.fold is not None:
            line, width = self.design.fold
            dist = _polyline_distance(x, y, line, reach=width / 2 + 6.0)
            fold = np.clip((width / 2 - dist) / 6.0, 0, 1) * tissue
            eosin, hema = eosin * (1 + fold), hema * (1 + 0.8 * fold)
        scale = stain_scale[..., None]
        od = scale * (hema[..., None] * H_OD + eosin[..., None] * E_OD)
        if self.design.pen:
            od = od + self.pen_od(x, y)[0]
        if self.design.artifacts:
            od = od + self.artifact_od(x, y)[0]
        rng_noise = _hash01(
            np.round(x / pixel_um).astype(np.int64),
            np.round(y / pixel_um).astype(np.int64),
            self.design.seed,
            99,
        )
        return od + (rng_noise[..., None] - 0.5) * 0.012  # sensor noise, also on glass

    def crowd(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Tumour-likeness in [0, 1] (denser, larger nuclei) at µm points: fine-grained
        noise here; a subclass plants tumour nests (``synthetic.slides.nests``)."""
        return np.clip(0.5 + 0.8 * self._lattice_noise(x * 3.1 + 500, y * 3.1 + 500), 0, 1)

    def _nuclei(self, x0: float, y0: float, w: int, h: int, pixel_um: float) -> np.ndarray:
        """Hematoxylin concentration of nuclei: drawn when resolvable, averaged when not."""
        x1, y1 = x0 + w * pixel_um, y0 + h * pixel_um
        i0, i1 = int(math.floor(x0 / _CELL_UM)) - 1, int(math.floor(x1 / _CELL_UM)) + 1
        j0, j1 = int(math.floor(y0 / _CELL_UM)) - 1, int(math.floor(y1 / _CELL_UM)) + 1
        ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1))
        seed = self.design.seed
        cx = (ii + 0.15 + 0.7 * _hash01(ii, jj, seed, 1)) * _CELL_UM
        cy = (jj + 0.15 + 0.7 * _hash01(ii, jj, seed, 2)) * _CELL_UM
        # "Tumour-like" regions: denser, larger nuclei, steered by the coarse noise.
        crowd = self.crowd(cx, cy)
        present = _hash01(ii, jj, seed, 3) < 0.35 + 0.5 * crowd
        radius = 2.2 + 1.6 * crowd + 0.8 * _hash01(ii, jj, seed, 4)
        conc = 0.85 + 0.5 * _hash01(ii, jj, seed, 5)
        out = np.zeros((h, w))
        if pixel_um > 1.6:  # nuclei smaller than ~2 px: use their expected coverage
            x, y = self._grid(x0, y0, w, h, pixel_um)
            local = self.crowd(x, y)
            mean_r = 2.2 + 1.6 * local + 0.4
            coverage = (0.35 + 0.5 * local) * math.pi * mean_r**2 / _CELL_UM**2
            return coverage * 1.1
        for cxi, cyi, r, c in zip(
            cx[present], cy[present], radius[present], conc[present], strict=True
        ):
            _stamp_disc(out, x0, y0, pixel_um, cxi, cyi, r, c, aspect=1.25)
        return out

    def _lymphocytes(self, x0: float, y0: float, w: int, h: int, pixel_um: float) -> np.ndarray:
        """Hematoxylin of lymphocyte nuclei: packed inside the aggregates, scattered at
        ``lymphocyte_background`` elsewhere (zero where neither)."""
        out = np.zeros((h, w))
        x1, y1 = x0 + w * pixel_um, y0 + h * pixel_um
        background = self.design.lymphocyte_background
        near = [
            (cx, cy, r)
            for cx, cy, r in self.design.lymphocytes
            if _box_near_disc(x0, y0, x1 - x0, y1 - y0, cx, cy, 1.3 * r)
        ]
        if not near and background <= 0:
            return out
        if pixel_um > 1.6:  # unresolved: expected coverage times stain
            x, y = self._grid(x0, y0, w, h, pixel_um)
            r_mean = sum(_LYMPH_RADIUS_UM) / 2
            coverage = math.pi * r_mean**2 / _LYMPH_CELL_UM**2
            inside = np.clip(self.lymphocyte_field(x, y) / 0.05, 0, 1) if near else np.zeros((h, w))
            share = np.maximum(inside * _LYMPH_PRESENT, background)
            return share * coverage * sum(_LYMPH_CONC) / 2
        cell = _LYMPH_CELL_UM
        i0, i1 = int(math.floor(x0 / cell)) - 1, int(math.floor(x1 / cell)) + 1
        j0, j1 = int(math.floor(y0 / cell)) - 1, int(math.floor(y1 / cell)) + 1
        ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1))
        seed = self.design.seed
        cx = (ii + 0.2 + 0.6 * _hash01(ii, jj, seed, 11)) * cell
        cy = (jj + 0.2 + 0.6 * _hash01(ii, jj, seed, 12)) * cell
        draw = _hash01(ii, jj, seed, 13)
        present = draw < background
        if near:
            present |= (draw < _LYMPH_PRESENT) & (self.lymphocyte_field(cx, cy) > 0)
        lo, hi = _LYMPH_RADIUS_UM
        radius = lo + (hi - lo) * _hash01(ii, jj, seed, 14)
        clo, chi = _LYMPH_CONC
        conc = clo + (chi - clo) * _hash01(ii, jj, seed, 15)
        for cxi, cyi, r, c in zip(
            cx[present], cy[present], radius[present], conc[present], strict=True
        ):
            _stamp_disc(out, x0, y0, pixel_um, cxi, cyi, r, c, aspect=1.0)
        return out

    def _apply_blur(self, od: np.ndarray, x0: float, y0: float, pixel_um: float) -> np.ndarray:
        if self.design.blur is None:  # nothing to blur: the caller's check was the fast path
            return od
        cx, cy, r = self.design.blur
        sigma = 3.0 / pixel_um  # 3 µm point spread: clearly out of focus at 20x
        blurred = np.stack([ndimage.gaussian_filter(od[..., k], sigma) for k in range(3)], -1)
        h, w = od.shape[:2]
        x, y = self._grid(x0, y0, w, h, pixel_um)
        weight = np.clip((r - np.hypot(x - cx, y - cy)) / 20.0, 0, 1)[..., None]
        return od * (1 - weight) + blurred * weight


def _stamp_disc(
    out: np.ndarray,
    x0: float,
    y0: float,
    pixel_um: float,
    cx: float,
    cy: float,
    r: float,
    conc: float,
    aspect: float,
) -> None:
    """Draw one nucleus (anti-aliased disc, y stretched by ``aspect``) into ``out`` by max."""
    h, w = out.shape
    px0 = max(int((cx - r - x0) / pixel_um) - 1, 0)
    px1 = min(int((cx + r - x0) / pixel_um) + 2, w)
    py0 = max(int((cy - r - y0) / pixel_um) - 1, 0)
    py1 = min(int((cy + r - y0) / pixel_um) + 2, h)
    if px0 >= px1 or py0 >= py1:
        return
    gx = x0 + (np.arange(px0, px1) + 0.5) * pixel_um
    gy = y0 + (np.arange(py0, py1) + 0.5) * pixel_um
    d = np.hypot(gx[None, :] - cx, (gy[:, None] - cy) * aspect)
    inside = np.clip((r - d) / max(pixel_um, 0.5) + 0.5, 0, 1) * conc
    region = out[py0:py1, px0:px1]
    np.maximum(region, inside, out=region)


def _box_near_disc(x: float, y: float, w: float, h: float, cx: float, cy: float, r: float) -> bool:
    nx, ny = min(max(cx, x), x + w), min(max(cy, y), y + h)
    return (nx - cx) ** 2 + (ny - cy) ** 2 <= r * r
