"""``slidebank ingest`` (the main job) and ``slidebank demo``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from slidebank._cli_common import (
    AddressOpt,
    JsonOpt,
    StorageOpt,
    fail_on_slidebank_error,
    parse_storage_options,
)

if TYPE_CHECKING:
    from infra.errors import IngestAborted
    from ingest.pipeline.runner import IngestResult
    from ingest.tiling.region import RegionConfig

__all__ = ["register"]

EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130


def ingest(
    source: Annotated[
        str,
        typer.Argument(
            help="Manifest (CSV/TSV/Parquet: uri, slide_id, patient_id, mpp) "
            "or a glob/prefix such as 's3://bucket/cohort/*.svs'."
        ),
    ],
    store: Annotated[str, typer.Option(help="Feature store URI (path or s3://...).")],
    encoder: Annotated[
        str, typer.Option(help="Encoder name (see `slidebank encoders`).")
    ] = "handcrafted-he-v1",
    weights: Annotated[
        str | None, typer.Option(help="Local weight file or hf-hub:owner/repo.")
    ] = None,
    mpp: Annotated[
        float,
        typer.Option(
            help="Target resolution of the tiles, µm/px. Per-slide MPP "
            "overrides go in the manifest's `mpp` column."
        ),
    ] = 0.5,
    tile: Annotated[int, typer.Option(help="Tile size in pixels at the target resolution.")] = 256,
    overlap: Annotated[
        float, typer.Option(help="Fraction of a tile shared with its neighbour.")
    ] = 0.0,
    min_tissue: Annotated[
        float, typer.Option(help="Keep tiles with at least this tissue fraction.")
    ] = 0.5,
    stain: Annotated[
        Literal["macenko", "none"], typer.Option(help="Stain normalization.")
    ] = "macenko",
    resample: Annotated[
        Literal["area", "lanczos"],
        typer.Option(
            help="How tiles read from a finer pyramid level reach --mpp: area (mean of the covered "
            "pixels) or lanczos (sharper, ~13x slower)."
        ),
    ] = "area",
    dtype: Annotated[
        Literal["float32", "float16"], typer.Option(help="Embedding storage dtype.")
    ] = "float32",
    address: AddressOpt = None,
    force: Annotated[bool, typer.Option(help="Redo slides already done with this config.")] = False,
    tiles_per_batch: Annotated[int, typer.Option(help="Tiles per read/encode batch.")] = 64,
    encode_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Device engine: tiles per encoder forward, apart from --tiles-per-batch "
            "(default: 256 on a GPU, 64 on a CPU; halved on a GPU out-of-memory), "
            "e.g. --encode-batch 128 for ViT-L on a 40 GB card.",
        ),
    ] = None,
    fragment_tiles: Annotated[
        int,
        typer.Option(
            min=1,
            help="Device engine: tiles per stored fragment; the writer thread gathers a "
            "slide's encoder batches into fragments this large (and the slide's tail).",
        ),
    ] = 2048,
    compile_encoder: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Device engine: torch.compile the encoder with static batch shapes (the "
            "last batch padded to --encode-batch), CUDA graphs on a GPU; compiles once per "
            "actor at start-up.",
        ),
    ] = False,
    cpus_per_device_actor: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Device engine: CPUs per device actor, its reader's decode threads "
            "(default: min(4, CPUs per GPU on the node)), e.g. --cpus-per-device-actor 8.",
        ),
    ] = None,
    read_concurrency: Annotated[
        int | None, typer.Option(help="Parallel slide readers (default: from CPUs).")
    ] = None,
    encoder_actors: Annotated[
        int | None, typer.Option(help="Encoder actors (default: one per GPU, else half the CPUs).")
    ] = None,
    commit_every: Annotated[
        int | None,
        typer.Option(
            help="Slides per atomic store commit (default: at least 8 and at most one "
            "commit per 2 s, so many small slides share one)."
        ),
    ] = None,
    device: Annotated[
        Literal["auto", "cpu", "cuda"], typer.Option(help="Where to decode and encode.")
    ] = "auto",
    engine: Annotated[
        Literal["auto", "fused", "device", "dataset", "inprocess"],
        typer.Option(
            help="auto: 'inprocess' for a small local job with no cluster (at most 4 slides, 2,000 "
            "grid tiles: no Ray start-up), else 'device' with GPUs (decode, QC, stain and encode "
            "on the GPU), else 'fused' (one read-encode-write actor per core); 'dataset': Ray "
            "Data actor pools."
        ),
    ] = "auto",
    runtime: Annotated[
        Literal["auto", "torch", "compile", "openvino", "onnxruntime"],
        typer.Option(
            help="How timm encoders run on CPU. auto: the fastest installed runtime whose float32 "
            "embeddings match eager PyTorch within 1e-4 (measured once per node and model, "
            "cached); torch: eager. openvino/onnxruntime need `pip install 'slidebank[runtimes]'`; "
            "a missing or failing one falls back to torch with a warning."
        ),
    ] = "auto",
    cpu_dtype: Annotated[
        Literal["float32", "bfloat16"],
        typer.Option(
            help="bfloat16: timm encoders on CPU under bf16 autocast (as on GPU); faster on CPUs "
            "with AVX512-BF16/AMX, embeddings within cosine ~0.999 of float32."
        ),
    ] = "float32",
    tag: Annotated[str | None, typer.Option(help="Tag the store version after this run.")] = None,
    storage_option: StorageOpt = None,
    no_dashboard: Annotated[
        bool, typer.Option(help="Do not start the Ray dashboard (embedded Ray only).")
    ] = False,
    as_json: JsonOpt = False,
    force_mpp: Annotated[
        bool,
        typer.Option(
            help="Accept MPP values outside 0.05-50 µm/px (--mpp and the manifest's mpp column)."
        ),
    ] = False,
    max_gpus: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="On an autoscaling cluster (GPU workers from zero): ask the autoscaler for "
            "up to this many GPUs, wait for the first (--gpu-wait) and use each as it "
            "joins. Default: only the GPUs present at the start.",
        ),
    ] = None,
    gpu_wait: Annotated[
        float,
        typer.Option(
            min=1, help="Seconds to wait for the first GPU with --max-gpus before failing."
        ),
    ] = 900.0,
    gpu_fallback_cpu: Annotated[
        bool,
        typer.Option(
            help="With --max-gpus: run on CPUs when no GPU joined within --gpu-wait, instead of failing."
        ),
    ] = False,
    partial_ok: Annotated[
        bool,
        typer.Option(
            help="Exit 0 when some slides failed (they stay listed in the summary and as failed in "
            "the store): for schedulers that would rerun the whole cohort on a non-zero exit."
        ),
    ] = False,
    summary: Annotated[
        str | None,
        typer.Option(
            help="Also write the JSON summary (every slide's outcome, failures with their reason) "
            "to this path or object-store URI."
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="Keep only the tiles inside this annotation class (with --annotations), "
            "e.g. --region tumour --annotations annotations/."
        ),
    ] = None,
    annotations: Annotated[
        str | None,
        typer.Option(
            help="Folder of <slide_id>.geojson (QuPath; .json, ASAP .xml too) for --region; "
            "slide_id as in the manifest."
        ),
    ] = None,
    min_coverage: Annotated[
        float, typer.Option(help="With --region: the share of a tile the class must cover.")
    ] = 0.5,
) -> None:
    """Ingest slides into the feature store: tissue, tiles, stain normalization, embeddings.

    Resumable: slides already done with the same configuration are skipped. Exit code 0
    when every slide is done, 3 when some failed or manifest rows were refused (each listed
    in the summary with its row and reason; 0 with --partial-ok), 2 when the input is
    unusable as a whole or the store cannot be written (a file in its place, read-only,
    disk full: one line, no traceback), or when --max-gpus got no GPU in time; 130 after
    Ctrl-C (one line: the slides committed, which a rerun of the same command skips).

    Example: slidebank ingest 's3://bucket/cohort/*.svs' --store s3://bucket/store -s endpoint_url=http://...
    """
    from features.store.location import StoreLocation
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.tiling.config import TilingConfig
    from slidebank.ingest_api import ingest as run

    options = parse_storage_options(storage_option)
    with _report_interrupted(), fail_on_slidebank_error(store), _report_partial(as_json):
        # A file in the way, a read-only folder or a full disk: said now, not after Ray starts.
        StoreLocation(store, options).check_writable()
        config = IngestConfig(
            encoder=encoder,
            weights=weights,
            stain=stain,
            embedding_dtype=dtype,
            tiling=TilingConfig(
                tile_size=tile,
                target_mpp=mpp,
                overlap=overlap,
                min_tissue_fraction=min_tissue,
                resample=resample,
                region=_region(region, annotations, min_coverage),
            ),
        )
        run_options = RunOptions(
            address=address,
            force=force,
            tiles_per_batch=tiles_per_batch,
            read_concurrency=read_concurrency,
            encoder_actors=encoder_actors,
            commit_every=commit_every,
            device=device,
            run_tag=tag,
            engine=engine,
            cpu_dtype=cpu_dtype,
            runtime=runtime,
            progress=not as_json,
            max_gpus=max_gpus,
            gpu_wait_s=gpu_wait,
            gpu_fallback_cpu=gpu_fallback_cpu,
            encode_batch=encode_batch,
            device_fragment_tiles=fragment_tiles,
            device_compile=compile_encoder,
            cpus_per_device_actor=cpus_per_device_actor,
        )
        result = run(
            source,
            store,
            config=config,
            options=run_options,
            storage_options=options or None,
            dashboard=not no_dashboard,
            force_mpp=force_mpp,
        )
        if summary:
            _write_summary(result, summary, options or None)
    _report(result, as_json)
    if result.failed and not partial_ok:
        raise typer.Exit(code=EXIT_SOME_FAILED)


def _summary_json(result: IngestResult) -> str:
    from dataclasses import asdict

    return json.dumps(asdict(result), indent=2, default=str)


def _region(
    region: str | None, annotations: str | None, min_coverage: float
) -> RegionConfig | None:
    """--region/--annotations/--min-coverage as the tiling's RegionConfig (None without)."""
    from infra.errors import ConfigError
    from ingest.tiling.region import RegionConfig

    if region is None and annotations is None:
        return None
    if region is None or annotations is None:
        raise ConfigError(
            "--region and --annotations go together: the class to keep and the "
            f"folder of its annotation files (got region={region!r}, "
            f"annotations={annotations!r})"
        )
    return RegionConfig.from_folder(region, annotations, min_coverage)


def _write_summary(result: IngestResult, uri: str, storage_options: dict | None) -> None:
    from infra.files import write_bytes_uri

    write_bytes_uri(uri, _summary_json(result).encode(), storage_options)


@contextlib.contextmanager
def _report_interrupted() -> Iterator[None]:
    """Ctrl-C: one line with what was committed and how to resume, no traceback, exit 130
    (what shells report for SIGINT)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        from ingest.pipeline.runner import IngestInterrupted

        known = exc if isinstance(exc, IngestInterrupted) else IngestInterrupted(None, None, 0)
        typer.secho(f"interrupted: {known}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=EXIT_INTERRUPTED) from None


@contextlib.contextmanager
def _report_partial(as_json: bool) -> Iterator[None]:
    """A run the store stopped part-way (disk full, read-only): its summary first, then
    the refusal itself goes on as the one-line error."""
    from infra.errors import IngestAborted

    try:
        yield
    except IngestAborted as exc:
        _report_aborted(exc, as_json)
        raise exc.cause from exc


def _report_aborted(exc: IngestAborted, as_json: bool) -> None:
    from dataclasses import asdict

    result = exc.partial
    if as_json:
        payload = {
            **asdict(result),
            "aborted": f"{type(exc.cause).__name__}: {exc.cause}",
            "run_recorded": exc.record_written,
            "record_error": exc.record_error,
        }
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    _report(result, as_json)
    stopped = sum(o.status == "aborted" for o in result.outcomes)
    typer.echo(
        f"{stopped} slides not ingested: the run stopped (a rerun resumes; committed "
        "slides are kept and skipped)"
    )
    if exc.record_written:
        typer.echo(f"run {result.run_id} recorded as failed in the store")
        return
    same = exc.record_error == f"{type(exc.cause).__name__}: {exc.cause}"
    typer.echo(
        f"run {result.run_id} could not be recorded in the store "
        f"({'the same error as below' if same else exc.record_error})"
    )


def _report(result: IngestResult, as_json: bool) -> None:
    from rich.console import Console

    from ingest.pipeline.progress import summary_table

    if as_json:
        typer.echo(_summary_json(result))
        return
    console = Console()
    console.print(summary_table(result))
    done = sum(o.status == "done" for o in result.outcomes)
    first = (
        f" (first tile after {result.first_tile_s:.1f} s)"
        if result.first_tile_s is not None
        else ""
    )
    console.print(
        f"{done} done, {len(result.failed)} failed, {len(result.skipped)} skipped, "
        f"{result.tiles:,} tiles in {result.seconds:.1f} s{first}{_how(result)}"
    )
    if result.metadata_updated:
        console.print(
            f"{len(result.metadata_updated)} slides: metadata updated, not re-encoded "
            "(patient_id from the manifest; other columns: slidebank slides set TABLE --store S)"
        )
    if result.compacted:
        console.print(f"store compacted: {result.compacted} small fragments merged")


def _how(result: IngestResult) -> str:
    """The engine and encoder runtime, when the run encoded anything."""
    if result.engine is None:
        return ""
    engine = "in-process (a small job: no Ray)" if result.engine == "inprocess" else result.engine
    if result.head_start:
        engine += f" (the first slide in-process while Ray started: {result.head_start[0]})"
    runtimes = f", encoder runtime {'/'.join(result.runtimes)}" if result.runtimes else ""
    return f"; engine {engine}{runtimes}"


def demo(
    out: Annotated[
        Path, typer.Option(help="Folder for the cohort, the store and the pictures.")
    ] = Path("slidebank-demo"),
    slides: Annotated[
        int,
        typer.Option(
            help="Synthetic slides to write (two per patient; the "
            "first half of the patients immune-High)."
        ),
    ] = 12,
    real_slide: Annotated[
        list[Path] | None,
        typer.Option(
            "--slide",
            exists=True,
            dir_okay=False,
            help="A real slide file to ingest beside the synthetic ones (repeatable).",
        ),
    ] = None,
) -> None:
    """Write a small synthetic cohort (plus any --slide you give, such as a real scan) and
    its labels.csv, ingest it with the default encoder into a local store, run a
    similarity query, and write a QC overlay PNG: what the README's data-science
    examples run on.

    Example: slidebank demo --out slidebank-demo --slide ../shared/data/cmu_small_region.svs
    """
    from rich.console import Console

    from infra.fs_errors import check_writable_folder
    from ingest.pipeline.progress import summary_table
    from slidebank.ingest_api import run_demo

    with fail_on_slidebank_error(out):
        check_writable_folder(out)
        report = run_demo(out, n_slides=slides, extra_slides=real_slide or ())
    console = Console()
    console.print(summary_table(report.result))
    if report.similar is not None and report.query is not None:
        sid, x, y = report.query
        console.print(f"\ntiles most like {sid} at ({x}, {y}), from other slides:")
        for row in report.similar.select(["slide_id", "x", "y", "distance"]).to_pylist():
            console.print(
                f"  {row['slide_id']:<22} ({row['x']:>6}, {row['y']:>6})  distance {row['distance']:.4f}"
            )
    console.print(f"\ncohort:  {report.cohort}\nstore:   {report.store}\noverlay: {report.overlay}")
    if report.labels is not None:
        console.print(
            f"labels:  {report.labels} (slide_id, patient_id, immune High/Low, infiltrate)"
        )
        console.print(
            f"next:    slidebank probe {report.labels} --label immune --store {report.store}"
        )
    else:
        console.print(f"next:    slidebank query slides --store {report.store}")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("demo")(demo)
