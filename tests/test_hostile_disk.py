"""Hostile disks and outputs (issue 24, findings 11 and 12).

A full disk, a read-only store and a file where the store should be end as one line and
exit code 2 (checked before Ray starts where the OS shows it, translated where it happens
mid-write); exports and pictures never replace an existing file without ``--overwrite``.

The failures are real OS ones: a tiny tmpfs fills up (ENOSPC), a read-only bind mount
refuses writes even to root (EROFS), a process file-size limit gives EFBIG. Mounting
needs root; where it is not available those tests skip and say so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anndata
import h5py
import pytest
import typer
from typer.testing import CliRunner

from features.store import FeatureStore
from features.store.export import to_parquet
from features.store.location import StoreLocation
from infra.errors import (
    DiskFullError,
    NotAFolderError,
    NotWritableError,
    OutputExistsError,
    StoreError,
)
from infra.files import atomic_write
from infra.fs_errors import translate_write_errors
from slidebank._cli_common import fail_on_slidebank_error
from slidebank.cli import app
from tests._support.datasci import build_picture_store, build_store

runner = CliRunner()
# Any attempt to reach Ray fails fast instead of starting a local cluster (15-40 s here):
# every ingest below must stop before Ray.
NO_RAY = ["--address", "127.0.0.1:9"]


# ------------------------------------------------------------------ OS-level helpers
def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs / read-only bind mount (the OS cannot "
                    "make a full or read-only disk for an unprivileged user here)")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"mount {' '.join(args)} failed here: {done.stderr.strip()}")


@contextlib.contextmanager
def tiny_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``: a real disk that fills up (ENOSPC)."""
    where.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` bind-mounted read-only over itself: EROFS for every writer, root included."""
    _mount("--bind", str(folder), str(folder))
    try:
        _mount("-o", "remount,bind,ro", str(folder))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def _one_line_exit_2(result, error: str, path: Path | str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"error: {error}: "), result.output
    assert str(path) in lines[0]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("disk") / "store"
    build_store(root, n_slides=4, tiles=16)
    return root


# ------------------------------------------------------------------ finding 11
def test_ingest_into_a_file_exits_2_before_ray(tmp_path):
    from ingest.synthetic import SyntheticSlideSpec, write_synthetic_slide

    slide = tmp_path / "s.svs"  # a real slide: the old code got as far as Lance, then a traceback
    write_synthetic_slide(slide, SyntheticSlideSpec(width=512, height=512))
    not_a_folder = tmp_path / "store"
    not_a_folder.write_text("a file where the store should be\n")
    done = subprocess.run(
        [sys.executable, "-c", "from slidebank.cli import main; main()", "ingest", str(slide),
         "--store", str(not_a_folder), "--no-dashboard", *NO_RAY],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: NotAFolderError: {not_a_folder}: is a file, not a folder"
    assert not_a_folder.read_text() == "a file where the store should be\n"


def test_store_below_a_file_is_refused_up_front_and_translated(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotAFolderError, match=f"{blocker} is a file") as up_front:
        StoreLocation(str(blocker / "store")).check_writable()
    assert isinstance(up_front.value, NotADirectoryError)
    # What Lance raises itself (a ValueError with "(os error 20)") reads the same way.
    with pytest.raises(NotAFolderError) as mid_run, translate_write_errors(blocker / "store"):
        FeatureStore.open(str(blocker / "store"), create=True)
    assert mid_run.value.errno == errno.ENOTDIR and isinstance(mid_run.value, StoreError)


def test_read_only_store_is_refused_by_ingest_and_tag(store_root, tmp_path):
    before = FeatureStore.open(str(store_root)).version
    with read_only(store_root):
        with pytest.raises(NotWritableError, match="read-only file system"):
            StoreLocation(str(store_root)).check_writable()
        result = runner.invoke(app, ["ingest", str(tmp_path / "none.svs"), "--store",
                                     str(store_root), *NO_RAY])
        _one_line_exit_2(result, "NotWritableError", store_root)
        # Mid-write, from Lance (a tag writes a file): the same one line, from any command.
        result = runner.invoke(app, ["tag", "v1", "--store", str(store_root)])
        _one_line_exit_2(result, "NotWritableError", "read-only file system (errno 30)")
    assert FeatureStore.open(str(store_root)).version == before


def test_full_disk_is_refused_before_ingest_starts(tmp_path):
    with tiny_disk(tmp_path / "disk", "64k") as disk:
        _fill(disk)
        with pytest.raises(DiskFullError, match="no space left"):
            StoreLocation(str(disk / "store")).check_writable()
        result = runner.invoke(app, ["ingest", str(tmp_path / "none.svs"), "--store",
                                     str(disk / "store"), *NO_RAY])
        _one_line_exit_2(result, "DiskFullError", disk / "store")


def test_disk_filling_mid_write_is_typed_and_the_store_survives(tmp_path):
    with tiny_disk(tmp_path / "disk", "192k") as disk:
        root = disk / "store"
        build_store(root, n_slides=1, tiles=8)
        with pytest.raises(DiskFullError) as caught, translate_write_errors(root):
            build_store(root, n_slides=40, tiles=200)
        assert caught.value.errno == errno.ENOSPC and str(root) in str(caught.value)
        # Lance committed nothing half-way: the first slide still reads back whole.
        assert len(FeatureStore.open(str(root)).bag("synthetic-00")) == 8


def test_worker_disk_full_through_ray_is_one_line(tmp_path, capsys):
    from ray.exceptions import RayTaskError

    with tiny_disk(tmp_path / "disk", "64k") as disk:
        _fill(disk)
        with pytest.raises(OSError, match=r"\(os error 28\)") as real:  # Lance's words, no errno
            FeatureStore.open(str(disk / "store"), create=True)
    assert not isinstance(real.value, StoreError)
    # What the ingest driver receives when a worker's fragment write hits the full disk.
    wrapped = RayTaskError("FusedStage.run", "worker traceback", real.value).as_instanceof_cause()
    with pytest.raises(typer.Exit) as exit_, fail_on_slidebank_error(disk / "store"):
        raise wrapped
    assert exit_.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: DiskFullError: ") and "no space left on device" in err


def test_export_onto_a_full_disk_exits_2_and_leaves_no_partial_file(store_root, tmp_path):
    with tiny_disk(tmp_path / "disk", "32k") as disk:
        out = disk / "parquet"
        result = runner.invoke(app, ["export", "parquet", str(out), "--store", str(store_root)])
        _one_line_exit_2(result, "DiskFullError", out)
        assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]


def test_file_size_limit_mid_export_is_disk_full(store_root, tmp_path):
    # Unprivileged too: a process file-size limit makes the OS refuse the write (EFBIG).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
    try:
        with pytest.raises(DiskFullError, match="file too large") as caught:
            to_parquet(FeatureStore.open(str(store_root)), tmp_path / "out")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.errno == errno.EFBIG


# ------------------------------------------------------------------ finding 12
def test_export_anndata_refuses_an_existing_file(store_root, tmp_path):
    out = tmp_path / "tiles.h5ad"
    out.write_bytes(b"precious")
    result = runner.invoke(app, ["export", "anndata", str(out), "--store", str(store_root)])
    _one_line_exit_2(result, "OutputExistsError", out)
    assert out.read_bytes() == b"precious"
    result = runner.invoke(app, ["export", "anndata", str(out), "--store", str(store_root),
                                 "--overwrite"])
    assert result.exit_code == 0, result.output
    assert anndata.read_h5ad(out).n_obs == 4 * 16


def test_export_api_refuses_an_existing_file(store_root, tmp_path):
    import slidebank as sb

    out = tmp_path / "slides.h5ad"
    out.write_bytes(b"precious")
    store = FeatureStore.open(str(store_root))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sb.export_anndata(store, out, level="slide")
    assert sb.export_anndata(store, out, level="slide", overwrite=True) == out
    assert anndata.read_h5ad(out).n_obs == 4


def test_export_h5_and_parquet_refuse_before_writing_any_file(store_root, tmp_path):
    h5_dir = tmp_path / "h5"
    h5_dir.mkdir()
    (h5_dir / "synthetic-02.h5").write_bytes(b"precious")
    result = runner.invoke(app, ["export", "h5", str(h5_dir), "--store", str(store_root)])
    _one_line_exit_2(result, "OutputExistsError", h5_dir / "synthetic-02.h5")
    assert sorted(p.name for p in h5_dir.iterdir()) == ["synthetic-02.h5"]
    result = runner.invoke(app, ["export", "h5", str(h5_dir), "--store", str(store_root),
                                 "--overwrite"])
    assert result.exit_code == 0, result.output
    with h5py.File(h5_dir / "synthetic-02.h5") as f:
        assert f["features"].shape == (16, 24)

    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    (pq_dir / "tiles.parquet").write_bytes(b"precious")
    result = runner.invoke(app, ["export", "parquet", str(pq_dir), "--store", str(store_root)])
    _one_line_exit_2(result, "OutputExistsError", pq_dir / "tiles.parquet")
    assert sorted(p.name for p in pq_dir.iterdir()) == ["tiles.parquet"]


def test_heatmap_refuses_an_existing_png(tmp_path):
    root = tmp_path / "pictures"
    build_picture_store(root, n_slides=1)
    out = tmp_path / "heat.png"
    out.write_bytes(b"precious")
    args = ["heatmap", "slide-0", "--store", str(root / "store"), "--out", str(out)]
    _one_line_exit_2(runner.invoke(app, args), "OutputExistsError", out)
    assert out.read_bytes() == b"precious"
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_umap_refuses_an_existing_png_before_computing(store_root, tmp_path):
    from slidebank.pictures_api import embedding_map

    out = tmp_path / "umap.png"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=str(out)):
        embedding_map(FeatureStore.open(str(store_root)), out)
    result = runner.invoke(app, ["umap", "--store", str(store_root), "--out", str(out)])
    _one_line_exit_2(result, "OutputExistsError", out)
    assert out.read_bytes() == b"precious"


def test_atomic_write_never_clobbers_a_file_that_appears_meanwhile(tmp_path):
    target = tmp_path / "out.bin"

    def race() -> None:
        with atomic_write(target, overwrite=False) as handle:
            handle.write(b"new")
            target.write_bytes(b"theirs")  # another writer gets there first

    with pytest.raises(OutputExistsError):
        race()
    assert target.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temp file left
    with atomic_write(target, overwrite=True) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
