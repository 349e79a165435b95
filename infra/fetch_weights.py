"""Copy an encoder's weights from object storage to a node's local disk before Ray starts.

The KubeRay jobs run this as an init container (``python -m infra.fetch_weights``): the
weights of ``$SLIDEBANK_ENCODER`` under ``$SLIDEBANK_WEIGHTS_URI`` (``<name>.safetensors``
or another weight suffix, or a ``<name>/`` folder of hub files) land in
``$SLIDEBANK_WEIGHTS_DIR``, where :mod:`features.encoders.weights` looks for them. Once
per pod, and the GPU pods are one per node: the model crosses the network once per node,
not once per actor. Files already there with the same size are kept (a restarted pod on
the same volume). Nothing under the URI is not an error: a built-in encoder needs no
weights, and a gated hub model may come through ``HF_TOKEN`` instead; the driver's own
load check names what is missing.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.files import atomic_path

__all__ = ["fetch_weights", "main"]

log = logging.getLogger(__name__)

#: what features.encoders.weights accepts in a weights folder
_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def fetch_weights(
    uri: str,
    encoder: str,
    dest: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Copy ``encoder``'s weight files under ``uri`` into ``dest``; returns the local paths."""
    from infra.storage import open_filesystem

    fs, base = open_filesystem(uri, storage_options)
    base = base.rstrip("/")
    stem = encoder.replace(":", "_")  # the name features.encoders.weights looks for
    remote = [
        f"{base}/{stem}{suffix}" for suffix in _SUFFIXES if fs.isfile(f"{base}/{stem}{suffix}")
    ]
    if fs.isdir(f"{base}/{stem}"):
        remote += sorted(fs.find(f"{base}/{stem}"))
    copied = []
    for path in remote:
        target = Path(dest) / path[len(base) + 1 :]
        size = int(fs.info(path)["size"])
        if not (target.is_file() and target.stat().st_size == size):
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                fs.get_file(path, str(tmp))
            log.info("fetched %s (%d bytes) to %s", path, size, target)
        copied.append(target)
    return copied


def main(environ: Mapping[str, str] = os.environ) -> int:
    """The init container: settings from the environment; exit 0 unless a copy fails."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uri, encoder = environ.get("SLIDEBANK_WEIGHTS_URI", ""), environ.get("SLIDEBANK_ENCODER", "")
    dest = environ.get("SLIDEBANK_WEIGHTS_DIR", "")
    if not (uri and encoder and dest):
        log.info(
            "no weights to fetch (SLIDEBANK_WEIGHTS_URI, SLIDEBANK_ENCODER or "
            "SLIDEBANK_WEIGHTS_DIR unset)"
        )
        return 0
    copied = fetch_weights(uri, encoder, dest)
    if not copied:
        log.info(
            "no weights for %s under %s: built-in encoder, or the hub (HF_TOKEN)", encoder, uri
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
