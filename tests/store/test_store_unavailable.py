"""Object storage that resets the store's listings: one typed error naming the store.

Before, a connection reset while Lance listed a table's versions (after object_store's
retries) reached the user as ``ValueError: LanceError(IO): Generic S3 error: Error
getting list response body ... object_store.rs:1576:42``, a traceback from deep inside
an open. The faults are real: the fault proxy in front of moto resets the TCP connection
mid-body on every listing.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lance
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from features.store import FeatureStore, SlideKey
from features.store._errors import StoreNotFoundError
from features.store._tables import TableSet
from features.store._unavailable import unavailable_error
from features.store.location import StoreLocation
from infra.errors import StoreUnavailableError
from slidebank import _cli_query
from tests._support.s3_faults import Fault, fault_proxy
from tests._support.store import CONFIG, ENCODER, slide_info, tile_payload

LISTING = r"list-type"  # S3 ListObjectsV2
# Lance's object_store retries once within 3 s; then the fault must surface (typed).
FAST_LANCE = {"client_max_retries": "1", "client_retry_timeout": "3"}


@pytest.fixture
def proxy(moto_server):
    with fault_proxy(moto_server) as p:
        yield p


@pytest.fixture
def s3_store(s3_bucket, s3_options) -> str:
    uri = f"{s3_bucket}/store"
    fs = FeatureStore.open(uri, s3_options, create=True)
    key = SlideKey("s1", ENCODER, CONFIG)
    fs.commit([fs.write_slide(key, slide_info("s1"), [tile_payload(5)])])
    return uri


@pytest.mark.s3
def test_a_reset_listing_is_a_typed_error_naming_the_store(proxy, s3_store, s3_options) -> None:
    options = {**s3_options, "endpoint_url": proxy.endpoint, **FAST_LANCE}
    store = FeatureStore.open(s3_store, options)
    proxy.add(Fault("reset", method="GET", path=LISTING, times=10_000))
    with pytest.raises(StoreUnavailableError) as info:
        store.slides()
    message = str(info.value)
    assert isinstance(info.value, ConnectionError)
    assert message.startswith(f"{s3_store}: ") and "slides.lance" in message
    assert "\n" not in message and ".rs:" not in message
    assert "LanceError(IO)" in message  # what the client said, for whoever debugs it
    assert proxy.fired("reset") >= 1
    proxy.clear()  # the fault passes: the same store object reads again
    assert store.slides().column("slide_id").to_pylist() == ["s1"]


@pytest.mark.s3
def test_cli_prints_one_line_for_a_reset_listing(proxy, s3_store, s3_options) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    _cli_query.register(app)
    options = {**s3_options, "endpoint_url": proxy.endpoint, **FAST_LANCE}
    flags = [
        arg
        for key, value in options.items()
        if key != "skip_instance_cache"
        for arg in ("-s", f"{key}={value}")
    ]
    proxy.add(Fault("reset", method="GET", path=LISTING, times=10_000))
    out = CliRunner().invoke(
        app, ["query", "sql", "SELECT count(*) FROM slides", "--store", s3_store, *flags]
    )
    assert out.exit_code == 2, out.output
    assert "StoreUnavailableError" in out.output and s3_store in out.output
    assert "Traceback" not in out.output


@pytest.mark.s3
@pytest.mark.slow  # s3fs's own retry loop backs off for ~13 s before giving up
def test_a_reset_folder_listing_through_fsspec_is_typed(proxy, s3_store, s3_options) -> None:
    options = {
        **s3_options,
        "endpoint_url": proxy.endpoint,
        "config_kwargs": {"read_timeout": 2, "retries": {"max_attempts": 2, "mode": "standard"}},
    }
    tables = TableSet(StoreLocation(s3_store, options))
    proxy.add(Fault("reset", method="GET", path=LISTING, times=10_000))
    with pytest.raises(StoreUnavailableError, match=r"listing tiles/") as info:
        tables.encoders()
    assert str(info.value).startswith(f"{s3_store}: ")
    proxy.clear()
    assert tables.encoders() == [ENCODER]


# ---- what is not a network fault keeps its own error (no network needed) ----------------
def test_a_corrupt_local_table_is_not_called_unavailable(tmp_path: Path) -> None:
    table = tmp_path / "store" / "slides.lance"
    lance.write_dataset(pa.table({"a": [1]}), str(table))
    for manifest in (table / "_versions").iterdir():
        manifest.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="LanceError") as info:
        lance.dataset(str(table))
    assert unavailable_error(info.value, str(tmp_path / "store"), "reading") is None
    tables = TableSet(StoreLocation(str(tmp_path / "store")))
    with pytest.raises(ValueError, match="LanceError") as opened:
        tables.slides()
    assert not isinstance(opened.value, StoreUnavailableError)


def test_a_missing_table_stays_not_found(tmp_path: Path) -> None:
    tables = TableSet(StoreLocation(str(tmp_path / "nothing")))
    with pytest.raises(StoreNotFoundError):
        tables.slides()


def test_a_reset_socket_in_the_chain_is_recognised() -> None:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as reset:
            raise RuntimeError("listing failed") from reset
    except RuntimeError as exc:
        typed = unavailable_error(exc, "s3://lab/store", "listing tiles/")
    assert isinstance(typed, StoreUnavailableError)
    assert str(typed).startswith("s3://lab/store: object storage failed listing tiles/")
    again = pickle.loads(pickle.dumps(typed))  # crosses Ray's process boundary intact
    assert type(again) is StoreUnavailableError and str(again) == str(typed)
