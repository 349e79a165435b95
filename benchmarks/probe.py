"""Quick baseline on a new label: ``slidebank probe`` vs the script a user writes by hand.

Same store, same labels, same run. The peer is what a data scientist wrote before the
probe existed (issue 18): read every bag, mean-pool it, then scikit-learn's
``cross_val_predict`` with ``StratifiedGroupKFold`` on patients and one AUROC (no CI,
no plot). slidebank reads the slide-level table kept by ingestion, then does the same
CV plus patient-bootstrap CIs (1,000 resamples) and writes the ROC/calibration PNG.

Cases: a store of S slides × T tiles × D dims (embeddings with a planted class signal),
two slides per patient. Reported: seconds (best of ``--repeats``), AUROC of each.

Usage: python -m benchmarks.probe --out benchmarks/results/probe.json [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import machine, print_table, write_json

FULL = {"slides": 200, "tiles": 1000, "dim": 256}
QUICK = {"slides": 60, "tiles": 300, "dim": 64}


def build(root: Path, slides: int, tiles: int, dim: int) -> tuple[Any, Path]:
    from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch

    store = FeatureStore.open(str(root / "store"), create=True)
    rows = ["slide_id,label"]
    for start in range(0, slides, 50):  # commit in groups, as ingestion does
        pending = []
        for i in range(start, min(slides, start + 50)):
            rng = np.random.default_rng(i)
            high = (i // 2) % 2 == 0
            emb = rng.normal(size=(tiles, dim)).astype(np.float32)
            emb[:, :8] += 0.03 if high else 0.0
            index = np.arange(tiles)
            batch = tile_batch(
                (index % 64) * 256,
                (index // 64) * 256,
                emb,
                tile_size=256,
                read_mpp=0.5,
                tissue_fraction=np.full(tiles, 0.9),
            )
            sid = f"s{i:05d}"
            info = SlideInfo(
                source_uri=f"/slides/{sid}.svs",
                mpp=0.5,
                patient_id=f"P{i // 2:05d}",
                level_dimensions=((16384, 16384),),
                code_version="bench",
            )
            pending.append(store.write_slide(SlideKey(sid, "bench", "cfg1"), info, [batch]))
            rows.append(f"{sid},{'high' if high else 'low'}")
        store.commit(pending)
        store.refresh_slide_embeddings([p.key.slide_id for p in pending], encoder="bench")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return store.latest(), labels


def peer(store: Any, labels: Path) -> float:
    """The hand-written script: bags → mean → CV logistic regression → AUROC."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table = pd.read_csv(labels)
    patients = store.slides(columns=["slide_id", "patient_id"]).to_pandas()
    table = table.merge(patients, on="slide_id")
    x = np.stack([store.bag(s).embeddings.mean(axis=0) for s in table["slide_id"]])
    y = (table["label"] == "high").to_numpy(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    p = cross_val_predict(
        model,
        x,
        y,
        groups=table["patient_id"],
        method="predict_proba",
        cv=StratifiedGroupKFold(5, shuffle=True, random_state=0),
    )[:, 1]
    return float(roc_auc_score(y, p))


def slidebank_probe(store: Any, labels: Path, out: Path) -> float:
    import slidebank as sb

    result = sb.probe(store, labels, label="label", model="logistic", out_dir=out)
    return float(result.metrics["auroc"]["value"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        store, labels = build(root, size["slides"], size["tiles"], size["dim"])
        build_s = time.perf_counter() - started
        rows = []
        for case, fn in (
            ("peer: bags + sklearn CV", lambda: peer(store, labels)),
            ("slidebank probe (+CIs, PNG)", lambda: slidebank_probe(store, labels, root / "out")),
        ):
            best, auc = float("inf"), float("nan")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                auc = fn()
                best = min(best, time.perf_counter() - t0)
            rows.append({"case": case, "seconds": best, "auroc": auc})
    print_table(rows, ["case", "seconds", "auroc"])
    write_json(
        args.out,
        {
            "machine": machine(),
            "size": size,
            "build_seconds": build_s,
            "note": "2-core machine shared with other jobs while measured",
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
