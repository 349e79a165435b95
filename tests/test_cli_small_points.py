"""Small frictions of the data scientist's path (issue 30 item 10)."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from ingest.pipeline.collector import SlideOutcome
from ingest.pipeline.progress import summary_table
from ingest.pipeline.runner import IngestResult
from slidebank.cli import app


def test_a_missing_store_is_explained_in_command_line_words(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,immune\ns0,High\n")
    result = CliRunner().invoke(
        app, ["probe", str(labels), "--label", "immune", "--store", str(tmp_path / "typo")]
    )
    assert result.exit_code == 2
    assert "`slidebank ingest` makes one" in result.output
    assert "pass create=True" not in result.output


def test_the_ingest_summary_wraps_a_long_error_instead_of_cutting_it() -> None:
    reason = "the reader gave up " * 12 + "TAILMARK"
    result = IngestResult(
        "run-1",
        "cfg",
        "enc",
        outcomes=[
            SlideOutcome("slide-a", "done", 12, seconds=1.0),
            SlideOutcome("slide-b", "failed", 0, "SlideOpenError", reason, 0.5),
        ],
    )
    out = io.StringIO()
    Console(file=out, width=80).print(summary_table(result))
    text = out.getvalue()
    assert "TAILMARK" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
