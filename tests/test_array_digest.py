"""infra.provenance.array_digest returns, byte for byte, the digests stored before it existed
(stain reference ids, codebook hashes, graph coordinate keys): the old expressions are
spelled out here on purpose."""

from __future__ import annotations

import hashlib

import numpy as np

from infra.provenance import array_digest, stable_hash
from ingest.stain.reference import reference_from_image
from training.spatial.modules import ModuleCodebook, ModuleSpec
from training.spatial.store_io import coords_sha

rng = np.random.default_rng(7)


def test_reference_id_digest_matches_the_old_expression() -> None:
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)[:, ::2]  # not C-contiguous
    host = np.ascontiguousarray(image)
    old = hashlib.sha256(repr(host.shape).encode() + host.tobytes()).hexdigest()
    assert array_digest(image, with_shape=True) == old
    assert array_digest(image.reshape(16, 48, 3), with_shape=True) != old  # shape counts


def test_reference_from_image_keeps_its_stored_id() -> None:
    image = np.full((64, 64, 3), 230, np.uint8)
    image[16:48, 16:48] = (150, 60, 140)  # a purple block: something to fit
    image[24:40, 24:40] = (60, 40, 120)
    host = np.ascontiguousarray(image)
    old = hashlib.sha256(repr(host.shape).encode() + host.tobytes()).hexdigest()
    params = reference_from_image(image, tissue_only=False)
    assert params.fitted_from == f"image:{old[:16]}" == params.reference_id


def test_coords_key_matches_the_old_expression() -> None:
    coords = rng.integers(0, 10_000, (50, 2)).astype(np.int32)
    old = hashlib.sha256(np.ascontiguousarray(np.asarray(coords, np.int64)).tobytes()).hexdigest()[
        :16
    ]
    assert coords_sha(coords) == old == array_digest(coords, dtype=np.int64)[:16]


def test_codebook_centroid_digest_matches_the_old_expression() -> None:
    centroids = rng.normal(size=(4, 8))  # float64: the digest is of its float32 bytes
    old = hashlib.sha256(np.ascontiguousarray(centroids, np.float32).tobytes()).hexdigest()
    assert array_digest(centroids, dtype=np.float32) == old
    book = ModuleCodebook(
        centroids=centroids.astype(np.float32),
        spec=ModuleSpec(k=4),
        slide_ids=("a", "b"),
        encoder="enc",
    )
    assert book.config_hash() == stable_hash(
        "tissue-modules",
        book.version,
        {"spec": book.spec, "slides": ["a", "b"], "encoder": "enc", "centroids": old},
    )
