"""1,000 slides on a 4-node Ray cluster started with ``ray start`` on this machine (issue 27 item 4).

    nice -n 10 python -m benchmarks.cluster4 [--slides 1000] [--nodes 4] [--cpus-per-node 1]
                                             [--out benchmarks/results/cluster4.json]

A head and three worker raylets (``benchmarks/_ray_nodes.py``: one ``ray start`` each,
1 CPU each so that four fit this machine's 2 cores, token auth on, every server on
loopback), then ``slidebank ingest MANIFEST --store STORE --address HEAD`` as a user
would run it, over the weight-free cohort of ``benchmarks/ingest_10k.py`` (1024² px
slides, ``--distinct`` files and hard links under their own ids). The head takes work
like any node (1 CPU), and the driver and its commits run beside it.

Checked:

* every slide done, each holding exactly its ``tile_count`` tiles, no (slide, x, y)
  twice, hard links of one file (read on different nodes) holding identical tile sets;
* slidebank's metrics leave through each node's own Prometheus endpoint (scraped every
  few seconds during the run, since a series goes once the process that made it exits):
  tiles encoded and bytes read per node (work on all four), finished slides on the head
  (the driver's), and the nodes' tiles adding up to the tiles stored.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, machine, write_json
from benchmarks._ray_nodes import RayNodes, exposed_sockets, parse_metrics, start_nodes, stop
from benchmarks.ingest_10k import ENCODER, cohort, tile_set_checks

#: metrics reach each node's endpoint every second instead of every 10 s
_SYSTEM_CONFIG = {"metrics_report_interval_ms": 1000}
_WATCHED = (
    "ray_slidebank_tiles_total",
    "ray_slidebank_bytes_read_total",
    "ray_slidebank_slides_total",
    "ray_slidebank_stage_seconds_count",
)


class Scraper(threading.Thread):
    """Every node's slidebank metrics every ``interval`` s; keeps the largest value seen
    per node and metric (counters only grow while their process lives)."""

    def __init__(self, cluster: RayNodes, interval: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.cluster, self.interval, self._halt = cluster, interval, threading.Event()
        self.best: dict[str, dict[str, float]] = {n.name: {} for n in cluster.nodes}
        self.scrapes: dict[str, int] = {n.name: 0 for n in cluster.nodes}
        self.errors: dict[str, str] = {}
        self.load: list[tuple[float, float]] = []

    def run(self) -> None:
        while not self._halt.is_set():
            self.once()
            self._halt.wait(self.interval)

    def once(self) -> None:
        self.load.append((time.time(), os.getloadavg()[0]))
        for node in self.cluster.nodes:
            try:
                values = parse_metrics(node.scrape())
            except OSError as exc:
                self.errors[node.name] = repr(exc)
                continue
            self.scrapes[node.name] += 1
            best = self.best[node.name]
            for name, value in values.items():
                best[name] = max(best.get(name, 0.0), value)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.once()


def manifest(paths: list[Path], folder: Path) -> Path:
    out = folder / "manifest.csv"
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "slide_id"])
        writer.writerows([str(p), p.stem] for p in paths)
    return out


def ingest(cluster: RayNodes, source: Path, store: Path, logs: Path) -> dict[str, Any]:
    cli = Path(sys.executable).with_name("slidebank")
    summary = logs / "summary.json"
    cmd = [
        str(cli),
        "ingest",
        str(source),
        "--store",
        str(store),
        "--address",
        cluster.address,
        "--stain",
        "none",
        "--encoder",
        ENCODER,
        "--json",
        "--summary",
        str(summary),
    ]
    started = time.perf_counter()
    with (logs / "ingest.out").open("w") as out, (logs / "ingest.err").open("w") as err:
        proc = subprocess.run(cmd, env=cluster.driver_env(), cwd=ROOT, stdout=out, stderr=err)
    seconds = time.perf_counter() - started
    return {
        "command": " ".join(cmd[1:]),
        "exit_code": proc.returncode,
        "seconds": seconds,
        "summary": _brief(json.loads(summary.read_text())) if summary.exists() else None,
        "stderr_tail": (logs / "ingest.err").read_text()[-1500:],
    }


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """The run summary without its per-slide outcomes (counted by status instead)."""
    statuses: dict[str, int] = {}
    for outcome in summary.get("outcomes", []):
        statuses[outcome["status"]] = statuses.get(outcome["status"], 0) + 1
    brief = {k: v for k, v in summary.items() if k not in ("outcomes", "skipped")}
    return {**brief, "outcomes_by_status": statuses, "skipped": len(summary.get("skipped", []))}


def checks(store_root: Path, paths: list[Path]) -> dict[str, Any]:
    from features.store import FeatureStore

    store = FeatureStore.open(str(store_root))
    slides = store.latest().slides(encoder=ENCODER).to_pandas()
    return {
        "slides_in_store": len(slides),
        "done": int((slides["status"] == "done").sum()),
        "tiles_stored": int(slides.loc[slides["status"] == "done", "tile_count"].sum()),
        **tile_set_checks(store, slides, paths),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slides", type=int, default=1000)
    parser.add_argument("--distinct", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--object-store-mb", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results/cluster4.json")
    args = parser.parse_args(argv)
    paths = cohort(args.slides, args.distinct)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sb4-", dir="/tmp") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        cluster = start_nodes(
            root,
            args.nodes,
            num_cpus=args.cpus_per_node,
            object_store_mb=args.object_store_mb,
            token=secrets.token_hex(32),
            system_config=_SYSTEM_CONFIG,
        )
        start_seconds = time.perf_counter() - started
        print(f"{len(cluster.nodes)} nodes up in {start_seconds:.0f} s at {cluster.address}")
        scraper = Scraper(cluster)
        try:
            scraper.start()
            run = ingest(cluster, manifest(paths, root), root / "store", root)
            listening, exposed = exposed_sockets(cluster)  # with the run's workers still up
            time.sleep(3)  # the last reports (1 s interval) reach the endpoints
            scraper.stop()
        finally:
            stopped = stop(cluster)
        print(json.dumps({k: v for k, v in run.items() if k != "summary"}, indent=1))
        store_checks = checks(root / "store", paths)
    per_node = {
        node.name: {
            "metrics_port": node.ports["metrics"],
            "scrapes": scraper.scrapes[node.name],
            **{name: scraper.best[node.name].get(name, 0.0) for name in _WATCHED},
        }
        for node in cluster.nodes
    }
    tiles_by_nodes = sum(v["ray_slidebank_tiles_total"] for v in per_node.values())
    result = {
        "benchmark": "cluster4",
        "machine": machine(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "load_1min_during": [round(v, 2) for _, v in scraper.load],
        "nodes": len(cluster.nodes),
        "cpus_per_node": args.cpus_per_node,
        "slides": len(paths),
        "distinct_files": min(args.slides, args.distinct),
        "cluster_start_seconds": start_seconds,
        "processes_stopped": stopped,
        "listening_sockets": listening,
        "sockets_beyond_loopback": exposed,
        "ingest": run,
        "store": store_checks,
        "per_node": per_node,
        "scrape_errors": scraper.errors,
        "nodes_with_work": sum(v["ray_slidebank_tiles_total"] > 0 for v in per_node.values()),
        "nodes_exporting_slidebank_metrics": sum(
            any(v[name] > 0 for name in _WATCHED) for v in per_node.values()
        ),
        "tiles_encoded_by_nodes": tiles_by_nodes,
        "tiles_by_nodes_equal_stored": tiles_by_nodes == store_checks["tiles_stored"],
        "slides_done_on_head_metric": per_node["head"]["ray_slidebank_slides_total"],
    }
    print(json.dumps({k: result[k] for k in ("store", "per_node", "nodes_with_work")}, indent=1))
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
