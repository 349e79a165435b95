"""``slidebank train`` and ``slidebank evaluate``: MIL models on Ray Train from a YAML config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from typer.core import TyperCommand

from slidebank._cli_common import AddressOpt, OverwriteOpt, fail_on_slidebank_error

__all__ = ["register"]


def train(
    config: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="Training config (.yaml); see training.mil.run_config.",
        ),
    ],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. train.epochs=5 workers=2.")
    ] = None,
    address: AddressOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the run summary as JSON (it is in OUT/RUN_ID/summary.json too)."
        ),
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_ID",
            help="Continue run RUN_ID in OUT: folds it finished with the "
            "same config are reused, the rest are trained.",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No per-epoch and per-fold progress lines.")
    ] = False,
    positive: Annotated[
        str | None,
        typer.Option(
            help="The positive class of a binary label (as `probe --positive`; YAML: positive). "
            "Default: the class named High, 1, True, yes or positive; any other pair needs it."
        ),
    ] = None,
    slide_table: Annotated[
        str | None,
        typer.Option(
            help="A slide table (slide_id, patient_id) mapping a cohort keyed by patient_id "
            "to slides (YAML: slide_table)."
        ),
    ] = None,
    aggregate: Annotated[
        str | None,
        typer.Option(
            help="slide; patient: metrics on each patient's mean slide score; patient-max: "
            "on its highest (YAML: aggregate; default slide)."
        ),
    ] = None,
) -> None:
    """Train a slide-level model with k-fold CV on Ray Train.

    Models (model.model in the YAML): {models}. Every model option is checked before
    Ray starts.

    The cohort is checked against the store before anything starts; each run writes to
    its own folder OUT/RUN_ID/ (predictions, metrics, ROC plots, summary.json, and
    report.html, one self-contained page of it all); the
    command prints a line per epoch and per fold on stderr, then a short summary of the
    metrics (--json: the summary itself). Each fold is saved in OUT/RUN_ID/folds/ when it
    ends; Ray failures are retried (max_failures=N, default 2), and a run that still
    fails continues with --resume RUN_ID.

    Example: slidebank train clam.yaml model.model=clam_mb workers=2 out=runs/clam-mb

    A config with `kind: tiles` trains a tile classifier from annotation coverage
    instead (training.tiles.job): folds on Ray Train workers, tile AUROC with CIs,
    map Dice/IoU, probabilities, maps and overlays written back.
    """
    from infra.storage import is_local
    from training.mil.runner import load_run_config, run_from_config
    from training.tiles.job import load_tile_config, run_tile_train, tile_summary_lines

    with fail_on_slidebank_error():
        extra = [f"address={address}"] if address else []
        tile_job = load_tile_config(config, [*(overrides or []), *extra])
        if tile_job is not None:  # kind: tiles (training.tiles.job)
            with fail_on_slidebank_error(tile_job.store):
                echo = None if quiet else lambda line: typer.echo(line, err=True)
                done = run_tile_train(tile_job, progress=echo)
            typer.echo(
                json.dumps(done, indent=2) if as_json else "\n".join(tile_summary_lines(done))
            )
            return
        run_config = load_run_config(config, [*(overrides or []), *extra])
        if positive is not None:
            run_config = replace(run_config, positive=positive)
        if slide_table is not None:
            local = is_local(slide_table) and not slide_table.startswith("file://")
            table_uri = str(Path(slide_table).resolve()) if local else slide_table
            run_config = replace(run_config, slide_table=table_uri)
        if aggregate is not None:
            # checked there: TrainRunConfig.aggregate must be slide, patient or patient-max
            run_config = replace(run_config, aggregate=cast(Any, aggregate))
        # The run writes attention into the store: a refusal there names the store.
        with fail_on_slidebank_error(run_config.store):
            summary = run_from_config(
                run_config,
                resume=resume,
                progress=None if quiet else lambda line: typer.echo(line, err=True),
            )
    if as_json:
        shown = {k: v for k, v in summary.items() if k not in ("history", "config")}
        typer.echo(json.dumps(shown, indent=2, default=float))
    else:
        typer.echo("\n".join(summary_lines(summary)))
    typer.secho(
        f"run {summary['run_id']}: results in {summary['out']}", fg=typer.colors.GREEN, err=True
    )


_SETS = ("val", "test", "external")


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """A few lines, as ``probe`` prints: what was trained, pooled metrics with 95% CIs
    per evaluation set, the positive class, where the files are."""
    config = summary.get("config") or {}
    model = (config.get("model") or {}).get("model", "mil")
    labels = ", ".join(config.get("labels") or [])
    folds = len(summary.get("checkpoints") or [])
    how = f"{folds}-fold CV" if config.get("cv", True) and folds > 1 else "one train/val/test split"
    unit = {
        "patient": ", metrics per patient (mean of its slides)",
        "patient-max": ", metrics per patient (its highest slide score)",
    }.get(str(summary.get("aggregate")), "")
    lines = [f"{model} on {labels} ({summary.get('task')}): {how}{unit}"]
    sets = [
        k
        for k, v in summary.items()
        if isinstance(v, Mapping) and ("pooled" in v or "mean_pearson_r" in v)
    ]
    for name in sorted(sets, key=lambda k: (_SETS.index(k) if k in _SETS else len(_SETS), k)):
        lines += _set_lines(name, summary[name])
    classes = summary.get("classes")
    if isinstance(classes, Mapping) and classes.get("positive") is not None:
        score = f" ({classes['score']})" if classes.get("score") else ""
        lines.append(
            f"  positive class: {classes.get('label', labels)}={classes['positive']} "
            f"(negative: {classes.get('negative')}){score}"
        )
    out = summary.get("out")
    if out:
        lines.append(f"  files: {out}/summary.json, predictions.parquet, *_roc.png")
    if summary.get("report"):
        lines.append(f"  report: {summary['report']}")
    return lines


def _set_lines(name: str, result: Mapping[str, Any]) -> list[str]:
    if "mean_pearson_r" in result:
        return [
            f"  {name:<9} mean Pearson r {result['mean_pearson_r']:.3f}, "
            f"{result['genes_q_below_0.05']} genes with q < 0.05"
        ]
    pooled = result.get("pooled") or {}
    n = pooled.get("n", {})
    head = f"  {name} (pooled, n={int(n.get('value', 0))}, {int(n.get('positives', 0))} positive)"
    lines = [head]
    for metric, m in pooled.items():
        if metric != "n":
            lines.append(
                f"    {metric:<18} {m['value']:.3f}  (95% CI {m['ci_low']:.3f} to {m['ci_high']:.3f})"
            )
    return lines


def evaluate(
    predictions: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="predictions.parquet written by `slidebank train`."
        ),
    ],
    labels: Annotated[
        list[str], typer.Option("--label", help="Label or gene column (repeatable).")
    ],
    task: Annotated[
        Literal["binary", "regression"], typer.Option(help="The task the predictions are for.")
    ] = "binary",
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and ROC PNGs.")] = Path("."),
    overwrite: OverwriteOpt = False,
) -> None:
    """Metrics with bootstrap 95% CIs (or per-gene r with FDR) and ROC plots from predictions.

    Files already in OUT (metrics.json, <set>_roc.png, <set>_genes.csv) are refused before
    anything is computed, unless --overwrite.

    Example: slidebank evaluate runs/clam/mil-20261203T101500-ab12cd/predictions.parquet --label ayers_ifng6_label --out eval
    """
    from infra.files import atomic_write_json, check_output
    from infra.tables import read_table
    from training.mil.runner import evaluate_predictions

    with fail_on_slidebank_error(out):
        metrics = check_output(out / "metrics.json", overwrite=overwrite)
        table = read_table(str(predictions))
        out.mkdir(parents=True, exist_ok=True)
        summary = evaluate_predictions(table, task, labels, out, overwrite=overwrite)
        atomic_write_json(metrics, summary, overwrite=overwrite)
    typer.echo(json.dumps(summary, indent=2, default=float))


class _TrainCommand(TyperCommand):
    """Fills ``{models}`` in the help from the model registry when help is shown, so
    every registered model is named and torch loads only for ``--help``."""

    # Any: typer vendors its own click, whose Context/HelpFormatter types are private
    def format_help(self, ctx: Any, formatter: Any) -> None:
        from training.mil.models import model_names

        self.help = (self.help or "").replace("{models}", ", ".join(model_names()))
        super().format_help(ctx, formatter)


def register(app: typer.Typer) -> None:
    app.command("train", cls=_TrainCommand)(train)
    app.command("evaluate")(evaluate)
