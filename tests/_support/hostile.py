"""Hostile inputs for tests: files built to cost a reader as much as possible."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np


def write_bomb_tiff(path: Path, side: int = 10**6, tile: int = 4096, mpp: float = 0.5) -> Path:
    """A ~530 KB TIFF declaring ``side`` × ``side`` RGB pixels in one level, every tile
    offset pointing at the same small deflate stream (issue 17's decompression bomb).

    tifffile writes the structure (one real tile, the rest empty); the tile offset and
    byte-count arrays are then rewritten in place to share that one stream.
    """
    import tifffile

    n_tiles = (-(-side // tile)) ** 2
    stream = zlib.compress(bytes(tile * tile * 3), 9)

    def tiles():
        yield stream
        for _ in range(n_tiles - 1):
            yield b""

    with tifffile.TiffWriter(path) as writer:
        writer.write(
            tiles(),
            shape=(side, side, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            compression="zlib",
            photometric="rgb",
            resolution=(1e4 / mpp, 1e4 / mpp),
            resolutionunit="CENTIMETER",
        )
    with tifffile.TiffFile(path) as tif:
        page, order = tif.pages.first, tif.byteorder
        offsets, counts = page.tags["TileOffsets"], page.tags["TileByteCounts"]
        first_offset, first_count = page.dataoffsets[0], page.databytecounts[0]
        where = [
            (offsets.valueoffset, offsets.dtype, first_offset),
            (counts.valueoffset, counts.dtype, first_count),
        ]
    codes = {3: "u2", 4: "u4", 16: "u8"}  # TIFF SHORT, LONG, LONG8
    with open(path, "r+b") as handle:
        for at, code, value in where:
            handle.seek(at)
            handle.write(np.full(n_tiles, value, np.dtype(order + codes[int(code)])).tobytes())
    return path
