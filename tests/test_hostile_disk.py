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
        pytest.skip(
            "needs root to mount a tmpfs / read-only bind mount (the OS cannot "
            "make a full or read-only disk for an unprivileged user here)"
        )
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
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    slide = tmp_path / "s.svs"  # a real slide: the old code got as far as Lance, then a traceback
    write_synthetic_slide(slide, SyntheticSlideSpec(width=512, height=512))
    not_a_folder = tmp_path / "store"
    not_a_folder.write_text("a file where the store should be\n")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from slidebank.cli import main; main()",
            "ingest",
            str(slide),
            "--store",
            str(not_a_folder),
            "--no-dashboard",
            *NO_RAY,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
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
        result = runner.invoke(
            app, ["ingest", str(tmp_path / "none.svs"), "--store", str(store_root), *NO_RAY]
        )
        _one_line_exit_2(result, "NotWritableError", store_root)
        # Mid-write, from Lance (a tag writes a file): the same one line, from any command,
        # naming the store (Lance's error does not).
        result = runner.invoke(app, ["tag", "v1", "--store", str(store_root)])
        _one_line_exit_2(result, "NotWritableError", store_root)
        assert result.output.strip().endswith("read-only file system (errno 30)")
    assert FeatureStore.open(str(store_root)).version == before


def test_full_disk_is_refused_before_ingest_starts(tmp_path):
    with tiny_disk(tmp_path / "disk", "64k") as disk:
        _fill(disk)
        with pytest.raises(DiskFullError, match="no space left"):
            StoreLocation(str(disk / "store")).check_writable()
        result = runner.invoke(
            app, ["ingest", str(tmp_path / "none.svs"), "--store", str(disk / "store"), *NO_RAY]
        )
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
    result = runner.invoke(
        app, ["export", "anndata", str(out), "--store", str(store_root), "--overwrite"]
    )
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
    result = runner.invoke(
        app, ["export", "h5", str(h5_dir), "--store", str(store_root), "--overwrite"]
    )
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


# ------------------------------------------------------------------ a run the disk stops
def _ingest_rows(store: FeatureStore, sid: str, write_id: str, n_tiles: int) -> dict:
    """What a worker hands the driver for a one-batch slide: its fragments, written for real."""
    import json

    import numpy as np

    from features.store import SlideInfo, SlideKey, tile_batch
    from features.store.writer import write_slide
    from tests._support.datasci import CONFIG, DIM, ENCODER

    index = np.arange(n_tiles)
    batch = tile_batch(
        index * 256,
        index * 0,
        np.ones((n_tiles, DIM), np.float32),
        tile_size=256,
        read_mpp=0.5,
        tissue_fraction=np.full(n_tiles, 0.9),
    )
    pending = write_slide(
        store.location,
        SlideKey(sid, ENCODER, CONFIG),
        SlideInfo(source_uri=""),
        [batch],
        write_id=write_id,
        table_ready=True,
    )
    return {
        "slide_id": sid,
        "write_id": write_id,
        "info_json": "{}",
        "status": "tiles",
        "n_batches": 1,
        "batch_index": 0,
        "fragments": json.dumps(list(pending.fragments)),
        "n_tiles": n_tiles,
        "dim": DIM,
    }


def _until_full(collector, store: FeatureStore, sources, write_ids) -> Exception:
    """Write and commit slide after slide until the disk refuses; that refusal, as raised."""
    try:
        for s in sources:
            collector.add(_ingest_rows(store, s.slide_id, write_ids[s.slide_id], 150))
    except (OSError, ValueError) as exc:  # Lance's errors come as either
        return exc
    raise AssertionError("the disk never filled up")


def test_a_run_the_disk_stops_keeps_its_committed_slides_in_the_partial_result(tmp_path):
    from features.store import new_write_id
    from infra.errors import IngestAborted
    from ingest.pipeline.collector import SlideCollector
    from ingest.pipeline.runner import IngestResult, _Watch
    from ingest.pipeline.sources import SlideSource
    from tests._support.datasci import CONFIG, DIM, ENCODER

    sources = [SlideSource(f"/slides/s{i:02d}.svs", f"s{i:02d}") for i in range(40)]
    with tiny_disk(tmp_path / "disk", "192k") as disk:
        store = FeatureStore.open(str(disk / "store"), create=True)
        store.ensure_tiles_table(ENCODER, DIM)
        result = IngestResult("run-test", CONFIG, ENCODER)
        watch = _Watch(0.0, result)
        write_ids = {s.slide_id: new_write_id() for s in sources}
        # The driver's own collector, committing each slide as it completes, as in a run.
        collector = SlideCollector(
            store,
            ENCODER,
            CONFIG,
            "float32",
            write_ids,
            1,
            result.run_id,
            committed=result.outcomes,
        )
        aborted = watch.aborted(_until_full(collector, store, sources, write_ids), sources, store)
        in_store = set(
            FeatureStore.open(str(disk / "store"))
            .slides(status="done")
            .column("slide_id")
            .to_pylist()
        )
    assert isinstance(aborted, IngestAborted) and isinstance(aborted.cause, DiskFullError)
    assert aborted.errno == errno.ENOSPC and not aborted.record_written
    partial = aborted.partial
    done = [o.slide_id for o in partial.outcomes if o.status == "done"]
    assert done and set(done) == in_store and partial.tiles == 150 * len(done)
    stopped = [o.slide_id for o in partial.outcomes if o.status == "aborted"]
    assert stopped and sorted(done + stopped) == [s.slide_id for s in sources]


@contextlib.contextmanager
def store_with_a_full(tmp_path: Path, part: str) -> Iterator[Path]:
    """A store whose ``part`` (a folder inside it) lies on a full tmpfs: the up-front check of
    the store root passes, the write into ``part`` part-way through the run does not."""
    root = tmp_path / "store"
    (root / part).mkdir(parents=True)
    disk = tmp_path / "disk"
    with contextlib.ExitStack() as stack:
        stack.enter_context(tiny_disk(disk, "64k"))
        _mount("--bind", str(disk), str(root / part))
        stack.callback(subprocess.run, ["umount", "-l", str(root / part)], check=False)
        FeatureStore.open(str(root), create=True)
        _fill(disk)
        yield root


def _slide(tmp_path: Path) -> Path:
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    path = tmp_path / "s1.svs"
    write_synthetic_slide(path, SyntheticSlideSpec(width=512, height=512))
    return path


def test_ingest_stopped_by_a_full_disk_prints_its_summary_then_one_line(tmp_path):
    slide = _slide(tmp_path)
    with store_with_a_full(tmp_path, "tiles") as root:
        result = runner.invoke(app, ["ingest", str(slide), "--store", str(root), *NO_RAY])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any("s1" in line and "aborted" in line for line in lines), result.output
    assert "1 slides not ingested: the run stopped" in result.output
    run_id = next(w for w in result.output.split() if w.startswith("run-"))
    assert f"run {run_id} recorded as failed in the store" in result.output
    assert lines[-1] == f"error: DiskFullError: {root}: no space left on device (errno 28)"
    runs = FeatureStore.open(str(root)).runs().to_pylist()
    assert [(r["run_id"], r["status"], r["n_slides_done"]) for r in runs] == [(run_id, "failed", 0)]


def test_ingest_that_cannot_record_its_run_says_so_in_one_line(tmp_path):
    slide = _slide(tmp_path)
    with store_with_a_full(tmp_path, "runs.lance") as root:
        result = runner.invoke(app, ["ingest", str(slide), "--store", str(root), "--json", *NO_RAY])
        runs = FeatureStore.open(str(root)).runs().num_rows
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert error == f"error: DiskFullError: {root}: no space left on device (errno 28)"
    import json

    payload = json.loads(result.output[: result.output.rindex(error)])
    assert [(o["slide_id"], o["status"]) for o in payload["outcomes"]] == [("s1", "aborted")]
    assert payload["run_recorded"] is False and runs == 0
    assert payload["record_error"].startswith("DiskFullError: ")


@pytest.mark.slow
def test_ingest_the_disk_fills_under_keeps_its_summary_and_committed_slides(ray_local, tmp_path):
    """The whole run on Ray: workers write fragments, the driver commits each slide, the
    disk fills part-way; the summary lists what was committed, the store keeps it."""
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for i in range(6):
        write_synthetic_slide(
            cohort / f"syn-{i}.svs",
            SyntheticSlideSpec(width=1792, height=1536, seed=40 + i, downsamples=(1, 4), n_blobs=2),
        )
    # Six slides take about 800 kB of this tmpfs one commit at a time: it fills part-way.
    with tiny_disk(tmp_path / "disk", "400k") as disk:
        root = disk / "store"
        result = runner.invoke(
            app,
            [
                "ingest",
                str(cohort / "*.svs"),
                "--store",
                str(root),
                "--commit-every",
                "1",
                "--no-dashboard",
            ],
        )
        in_store = set(
            FeatureStore.open(str(root)).slides(status="done").column("slide_id").to_pylist()
        )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: DiskFullError: {root}"), result.output
    listed = {line.split()[1] for line in lines if "│ done" in line}
    assert in_store and listed == in_store, result.output
    assert "slides not ingested: the run stopped" in result.output


# ------------------------------------------------------------------ the Python API
def test_ingest_api_refuses_an_unwritable_store_before_any_work(tmp_path):
    import slidebank as sb
    from ingest.pipeline.config import RunOptions

    not_a_folder = tmp_path / "store"
    not_a_folder.write_text("a file where the store should be\n")
    # No such slide either: the store is what is refused, first, as the CLI does.
    with pytest.raises(NotAFolderError, match=f"{not_a_folder}: is a file"):
        sb.ingest(
            str(tmp_path / "none.svs"),
            str(not_a_folder),
            options=RunOptions(address="127.0.0.1:9", progress=False),
        )
    assert not_a_folder.read_text() == "a file where the store should be\n"


# ------------------------------------------------------------------ more outputs (finding 12)
def test_tissue_refuses_existing_report_files_before_reading_the_slide(tmp_path):
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    slide = tmp_path / "t1.svs"
    write_synthetic_slide(slide, SyntheticSlideSpec(width=1024, height=768, downsamples=(1,)))
    args = ["tissue", str(slide), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    report = tmp_path / "out" / "t1"
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    slide.rename(
        tmp_path / "gone.svs"
    )  # refused before the slide is opened, or this would be the error
    _one_line_exit_2(runner.invoke(app, args), "OutputExistsError", report / "overlay.png")
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before
    (tmp_path / "gone.svs").rename(slide)
    (report / "overlay.png").unlink()  # any one of the four files is refused, not only the first
    _one_line_exit_2(runner.invoke(app, args), "OutputExistsError", report / "tissue.geojson")
    assert not (report / "overlay.png").exists()
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (report / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _predictions(path: Path) -> Path:
    import numpy as np
    import pandas as pd

    y = np.tile([0, 1], 10)
    pd.DataFrame(
        {
            "fold": np.repeat(range(2), 10),
            "set": "test",
            "target:sig": y,
            "pred:sig": np.clip(y * 0.6 + np.linspace(0, 0.4, 20), 0, 1),
        }
    ).to_parquet(path)
    return path


def test_evaluate_refuses_existing_metrics_and_figures_before_computing(tmp_path):
    predictions = _predictions(tmp_path / "predictions.parquet")
    out = tmp_path / "eval"
    out.mkdir()
    args = ["evaluate", str(predictions), "--label", "sig", "--out", str(out)]
    (out / "metrics.json").write_text("precious")
    _one_line_exit_2(runner.invoke(app, args), "OutputExistsError", out / "metrics.json")
    (out / "metrics.json").unlink()
    (out / "test_roc.png").write_bytes(b"precious")  # the figure of the predictions' set
    _one_line_exit_2(runner.invoke(app, args), "OutputExistsError", out / "test_roc.png")
    # Refused before anything was computed: no metrics, the figure untouched.
    assert sorted(p.name for p in out.iterdir()) == ["test_roc.png"]
    assert (out / "test_roc.png").read_bytes() == b"precious"


@pytest.mark.slow
def test_evaluate_overwrite_replaces_its_files(tmp_path):
    # ~20 s: evaluate's bootstrap CIs (scikit-learn) dominate.
    predictions = _predictions(tmp_path / "predictions.parquet")
    out = tmp_path / "eval"
    out.mkdir()
    (out / "test_roc.png").write_bytes(b"precious")
    result = runner.invoke(
        app, ["evaluate", str(predictions), "--label", "sig", "--out", str(out), "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "test_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "test_roc.png"]


def test_a_figure_appearing_meanwhile_is_not_replaced(tmp_path):
    from training.figures import pyplot, save_figure

    fig = pyplot().figure()
    target = tmp_path / "fig.png"
    target.write_bytes(b"theirs")
    with pytest.raises(OutputExistsError):
        save_figure(fig, target, overwrite=False)
    assert target.read_bytes() == b"theirs" and not pyplot().get_fignums()


def test_cohort_build_refuses_an_existing_table(store_root, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "slide_id,immune\n"
        + "".join(f"synthetic-{i:02d},{'high' if i % 2 else 'low'}\n" for i in range(4))
    )
    out = tmp_path / "cohort.parquet"
    out.write_bytes(b"precious")
    args = [
        "cohort",
        "build",
        "--labels",
        str(labels),
        "--store",
        str(store_root),
        "--out",
        str(out),
        "--no-splits",
    ]
    _one_line_exit_2(runner.invoke(app, args), "OutputExistsError", out)
    assert out.read_bytes() == b"precious" and not (tmp_path / "cohort.report.json").exists()
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 4
