"""Finding, checking and loading encoder weights, offline first.

Resolution order for an encoder that needs weights (the first that applies wins):

1. an explicit file (``Encoder(name, weights=path)``, ``slidebank ... --weights path``), or an
   explicit hub name, ``weights="hf-hub:owner/repo"`` or ``"hf-hub:owner/repo/file"`` (a
   mirror or fork; cache first, then download as in 5);
2. ``$SLIDEBANK_WEIGHTS_<NAME>`` (e.g. ``SLIDEBANK_WEIGHTS_UNI2_H``), a file path;
3. ``$SLIDEBANK_WEIGHTS_DIR/<name>.safetensors`` (or ``.bin``/``.pt``/``.pth``), or
   ``$SLIDEBANK_WEIGHTS_DIR/<name>/<hub file name>``: one folder for a whole offline cluster;
4. the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``), without touching the network;
5. a download from the hub, only when ``huggingface_hub`` is installed and
   ``HF_HUB_OFFLINE`` is not set. Only the listed weight files are fetched, never code.

When none works, :class:`~infra.errors.WeightsError` says what was tried and how to provide
the file. Safetensors is preferred because it cannot carry code; pickle-based files are read
with ``torch.load(weights_only=True)`` only, which refuses anything but tensors and plain
containers. The file's sha256 is recorded as provenance.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from features.encoders.spec import EncoderSpec, WeightsSpec
from infra.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = [
    "WeightsSource",
    "WeightsStatus",
    "adapt_state_dict",
    "check_torch_archive",
    "load_state_dict",
    "resolve_weights",
    "sha256_file",
    "weights_status",
]

logger = logging.getLogger(__name__)

Origin = Literal["explicit", "env", "weights-dir", "hub-cache", "hub-download"]
WeightsStatus = Literal["built-in", "local file", "hub cache", "downloadable", "needs weights"]

HUB_PREFIX = "hf-hub:"
_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt"}


@dataclass(frozen=True)
class WeightsSource:
    """Where a weight file was found (``hub_repo`` set when it came from the hub)."""

    path: Path
    origin: Origin
    hub_repo: str | None = None


# -- resolution ------------------------------------------------------------------------------


def _hub_offline() -> bool:
    # Read at call time: huggingface_hub snapshots the variable when it is first imported.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # the library's default (~/.cache/huggingface/hub)


def _hub_module() -> Any | None:
    try:
        import huggingface_hub
    except ImportError:
        return None
    return huggingface_hub


def _from_env(spec: EncoderSpec) -> WeightsSource | None:
    value = os.environ.get(spec.env_var)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise WeightsError(f"{spec.env_var}={value} does not name a file")
    return WeightsSource(path, "env")


def _from_weights_dir(spec: EncoderSpec) -> WeightsSource | None:
    root = os.environ.get("SLIDEBANK_WEIGHTS_DIR")
    if not root:
        return None
    base = Path(root).expanduser()
    stem = spec.name.replace(":", "_")
    candidates = [base / f"{stem}{suffix}" for suffix in _SUFFIXES]
    if spec.weights is not None:
        candidates += [base / stem / name for name in spec.weights.filenames]
    for path in candidates:
        if path.is_file():
            return WeightsSource(path, "weights-dir")
    return None


def _from_hub_cache(spec: EncoderSpec) -> WeightsSource | None:
    hub = _hub_module()
    if hub is None or spec.weights is None or spec.weights.hub_repo is None:
        return None
    for filename in spec.weights.filenames:
        found = hub.try_to_load_from_cache(
            spec.weights.hub_repo, filename, cache_dir=_hub_cache_dir()
        )
        if isinstance(found, str) and os.path.isfile(found):
            return WeightsSource(Path(found), "hub-cache", spec.weights.hub_repo)
    return None


def _download(spec: EncoderSpec, tried: list[str]) -> WeightsSource | None:
    hub = _hub_module()
    if spec.weights is None or spec.weights.hub_repo is None:
        return None
    if hub is None:
        tried.append("hub download: huggingface_hub is not installed")
        return None
    if _hub_offline():
        tried.append("hub download: skipped because HF_HUB_OFFLINE is set")
        return None
    from huggingface_hub import errors as hub_errors

    repo = spec.weights.hub_repo
    for filename in spec.weights.filenames:
        try:
            path = hub.hf_hub_download(repo, filename, cache_dir=_hub_cache_dir())
        except (hub_errors.GatedRepoError, hub_errors.RepositoryNotFoundError) as exc:
            tried.append(f"hub download of {repo}: access refused ({type(exc).__name__})")
            return None  # every file of a refused repository is refused too
        except hub_errors.RemoteEntryNotFoundError:
            tried.append(f"hub download: {repo} has no {filename}")
            continue
        except (hub_errors.HfHubHTTPError, OSError, ValueError) as exc:
            # LocalEntryNotFoundError (an OSError) is how the library reports "no network".
            reason = str(exc).strip().rstrip(".")
            tried.append(
                f"hub download of {repo}/{filename}: {type(exc).__name__}: {reason} "
                "(on machines without network, HF_HUB_OFFLINE=1 skips this step)"
            )
            return None
        logger.info("downloaded %s/%s for encoder %s", repo, filename, spec.name)
        return WeightsSource(Path(path), "hub-download", repo)
    return None


def _instructions(spec: EncoderSpec, tried: list[str]) -> str:
    weights = spec.weights
    repo = weights.hub_repo if weights else None
    files = " or ".join(weights.filenames) if weights else "a weight file"
    lines = [f"encoder {spec.name!r} needs weights and none could be found."]
    if weights is not None and weights.gated and repo:
        lines.append(
            f"{repo} is gated on the Hugging Face Hub: request access at {weights.hub_url} "
            "(slidebank cannot accept the terms for you)."
        )
    lines += [
        "Provide the weights in one of these ways:",
        f"  - pass a local file: --weights /path/to/{(weights.filenames[0] if weights else 'model.safetensors')}"
        f" (Python: Encoder({spec.name!r}, weights=path));",
        f"  - set {spec.env_var}=/path/to/file, or put it at "
        f"$SLIDEBANK_WEIGHTS_DIR/{spec.name.replace(':', '_')}.safetensors;",
    ]
    if repo:
        lines.append(
            f"  - or, on a machine that reaches the hub, run `hf auth login` (or set HF_TOKEN), "
            f"leave HF_HUB_OFFLINE unset, and {repo} ({files}) is downloaded into the cache once."
        )
    lines.append(
        "Safetensors files are preferred; .bin/.pt files load with torch.load(weights_only=True)."
        " The weight-free default encoder 'handcrafted-he-v1' needs nothing."
    )
    if tried:
        lines.append("Tried: " + "; ".join(tried) + ".")
    return "\n".join(lines)


def _from_named_hub(spec: EncoderSpec, name: str) -> WeightsSource:
    """``hf-hub:owner/repo`` (the spec's file names) or ``hf-hub:owner/repo/path/file``."""
    parts = [part for part in name.split("/") if part]
    if len(parts) < 2:
        raise WeightsError(f"{HUB_PREFIX}{name}: expected {HUB_PREFIX}owner/repo[/file]")
    base = spec.weights or WeightsSpec(hub_repo=None)
    filenames = ("/".join(parts[2:]),) if len(parts) > 2 else base.filenames
    named = dataclasses.replace(
        spec, weights=dataclasses.replace(base, hub_repo="/".join(parts[:2]), filenames=filenames)
    )
    found = _from_hub_cache(named)
    if found is not None:
        return found
    tried = [f"Hugging Face cache ({_hub_cache_dir() or 'default location'}): not cached"]
    downloaded = _download(named, tried)
    if downloaded is not None:
        return downloaded
    raise WeightsError(_instructions(named, tried))


def resolve_weights(
    spec: EncoderSpec, weights: str | os.PathLike[str] | None = None
) -> WeightsSource:
    """Find ``spec``'s weight file (see module docstring for the order).

    Raises :class:`~infra.errors.WeightsError` with instructions when nothing is found.
    """
    if spec.is_builtin:
        raise WeightsError(f"encoder {spec.name!r} is built in and takes no weight file")
    if isinstance(weights, str) and weights.startswith(HUB_PREFIX):
        return _from_named_hub(spec, weights.removeprefix(HUB_PREFIX))
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} for encoder {spec.name!r} does not exist")
        return WeightsSource(path, "explicit")
    tried = [f"${spec.env_var} (unset)"]
    for finder in (_from_env, _from_weights_dir, _from_hub_cache):
        found = finder(spec)
        if found is not None:
            return found
    if os.environ.get("SLIDEBANK_WEIGHTS_DIR"):
        tried.append(f"$SLIDEBANK_WEIGHTS_DIR={os.environ['SLIDEBANK_WEIGHTS_DIR']} (no file)")
    if spec.weights is not None and spec.weights.hub_repo:
        tried.append(f"Hugging Face cache ({_hub_cache_dir() or 'default location'}): not cached")
    downloaded = _download(spec, tried)
    if downloaded is not None:
        return downloaded
    raise WeightsError(_instructions(spec, tried))


def weights_status(spec: EncoderSpec) -> WeightsStatus:
    """Where this encoder's weights would come from now, without network or hashing."""
    if spec.is_builtin:
        return "built-in"
    try:
        if _from_env(spec) or _from_weights_dir(spec):
            return "local file"
    except WeightsError:
        return "needs weights"  # the variable is set but points at nothing
    if _from_hub_cache(spec):
        return "hub cache"
    usable_hub = _hub_module() is not None and not _hub_offline()
    if spec.weights is not None and spec.weights.hub_repo and not spec.weights.gated and usable_hub:
        return "downloadable"
    return "needs weights"


# -- checksums -------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256 hex digest (memoized by path, size and modification time)."""
    stat = os.stat(path)
    return _sha256_cached(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- loading ---------------------------------------------------------------------------------


def _is_safetensors(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        return True
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        return False
    # Unknown suffix: a safetensors file starts with an 8-byte header length then '{'.
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def check_torch_archive(path: str | os.PathLike[str]) -> None:
    """Refuse a pickle-based checkpoint whose loading would take work out of proportion to
    its size, before ``torch.load`` touches it (issue 24).

    ``torch.save`` writes a zip of *stored* entries, so the archive's declared sizes add up
    to less than the file. A deflated entry, or sizes past the file's, is a zip bomb: torch
    would inflate it whole into memory. A file that is not a zip is a legacy (pre-1.6)
    pickle or tar checkpoint, which allocates every tensor at the size it declares before
    reading its bytes, so it is refused too.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except OSError as exc:
        raise WeightsError(f"{path.name}: cannot read: {exc.strerror or _first_line(exc)}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise WeightsError(
            f"{path.name}: refused to load: not a zip archive ({_first_line(exc)}); torch.save "
            "writes zip files since PyTorch 1.6 and legacy checkpoints are not read. Re-save it "
            "with a current torch.save or convert it to safetensors."
        ) from exc
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            raise WeightsError(
                f"{path.name}: refused to load: archive entry {entry.filename!r} "
                "is compressed, which torch.save never writes (a zip bomb?)"
            )
        if entry.file_size != entry.compress_size or entry.header_offset + entry.file_size > size:
            raise WeightsError(
                f"{path.name}: refused to load: archive entry {entry.filename!r} "
                f"declares {entry.file_size:,} bytes in a {size:,}-byte file"
            )


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint as ``{name: tensor}`` without executing anything from the file.

    Safetensors is read directly. Other files must pass :func:`check_torch_archive`, then go
    through ``torch.load(weights_only=True)``; a pickle that tries to build anything but
    tensors and containers (code, arbitrary objects) is refused with :class:`~infra.errors.WeightsError`. A ``{"state_dict": ...}``
    or ``{"model": ...}`` wrapper is unwrapped.
    """
    import torch

    path = Path(path)
    safetensors = _is_safetensors(path)
    if not safetensors:
        check_torch_archive(path)
    try:
        if safetensors:
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path.name}: refused to load: the pickle holds more than tensors "
            "(weights_only=True rejected it). Convert it to safetensors from a trusted source."
        ) from exc
    except Exception as exc:  # safetensors' SafetensorError derives from Exception only
        if not isinstance(
            exc, OSError | RuntimeError | ValueError | EOFError | _safetensor_error()
        ):
            raise
        raise WeightsError(f"{path.name}: not a readable checkpoint: {_first_line(exc)}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise WeightsError(f"{path.name}: expected a mapping of names to tensors")
    return loaded


def verify_weights_file(path: str | os.PathLike[str]) -> None:
    """Refuse an unreadable weight file with :class:`WeightsError` before any work starts
    (a corrupt file otherwise fails after the store's folders were created). Safetensors:
    the header and every tensor's byte range are checked without reading the tensors."""
    path = Path(path)
    if not _is_safetensors(path):
        load_state_dict(path)
        return
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            list(handle.keys())
    except Exception as exc:
        if not isinstance(exc, OSError | ValueError | _safetensor_error()):
            raise
        raise WeightsError(f"{path.name}: corrupt safetensors file: {_first_line(exc)}") from exc


def _safetensor_error() -> type[Exception]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # an old safetensors without the public name
        return ValueError
    return SafetensorError


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def adapt_state_dict(spec: EncoderSpec, state: dict[str, Any]) -> dict[str, Any]:
    """Apply the spec's adapter and strip wrapper prefixes (``module.`` from DDP, ``model.``)."""
    for prefix in ("module.", "model.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    fmt = spec.weights.state_dict_format if spec.weights else "timm"
    if fmt == "timm":
        return state
    from features.encoders.checkpoint_formats import adapter_for

    adapter = adapter_for(fmt)
    if adapter is None:
        raise WeightsError(f"{spec.name}: no adapter registered for checkpoint format {fmt!r}")
    return adapter(state)
