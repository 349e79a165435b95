"""MIL training throughput: slidebank (store bags, Ray Train DDP) vs the per-slide h5 loop.

    python -m benchmarks.train --out train.json [--quick]

The same synthetic cohort (planted signal, fixed seed) is written to the feature store
and as one h5 file per slide in the CLAM layout (``features`` (N, D) float32, ``coords``
(N, 2), row chunks of (1, D)). The peer is the usual plain PyTorch loop: one process,
batch size 1, read each slide's h5 file every epoch, forward/backward/step; it is also
run with every bag read into memory first (its best case). slidebank trains the same
ABMIL on the same slides in-process (``training.mil.train.fit``) and through
``TorchTrainer`` with 1 and 2 CPU workers, with bags read from the store every epoch
(cache off) or read once by one scan of the tiles table and kept in worker memory
(cache on, the default). Reported: training slides/s per epoch (mean over epochs after
the first, which holds warm-up and, with the cache, the one read), the first epoch's
rate, each case's wall time, and for Ray the job overhead (worker start-up, validation,
reports, checkpoints). Everything is generated in this run; the machine's load average
is recorded because a shared box moves these numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import machine, print_table, write_json

FULL = {"slides": 120, "tiles": 3000, "dim": 384, "epochs": 5}
QUICK = {"slides": 32, "tiles": 500, "dim": 64, "epochs": 4}


def write_h5(cohort: Any, folder: Path) -> dict[str, Path]:
    import h5py

    from features.store import FeatureStore

    store = FeatureStore.open(cohort.store_uri)
    paths = {}
    for bag in store.iter_bags(list(cohort.table["slide_id"]), encoder=cohort.encoder):
        path = folder / f"{bag.slide_id}.h5"
        with h5py.File(path, "w") as f:
            dim = bag.embeddings.shape[1]
            f.create_dataset(
                "features",
                data=bag.embeddings.astype(np.float32),
                maxshape=(None, dim),
                chunks=(1, dim),
            )
            f.create_dataset("coords", data=bag.coords, maxshape=(None, 2), chunks=(1, 2))
        paths[bag.slide_id] = path
    return paths


def _h5_bag(path: Path) -> Any:
    import h5py
    import torch

    with h5py.File(path, "r") as f:
        return torch.from_numpy(f["features"][:])


def _peer_epochs(cfg: Any, items: list[Any], head: Any, epochs: int, bag: Any) -> list[float]:
    """Plain single-process PyTorch MIL, batch size 1; ``bag(slide_id)`` gives the features."""
    import torch

    from training.mil.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rates = []
    for epoch in range(epochs):
        order = np.random.default_rng([0, epoch]).permutation(len(items))
        start = time.perf_counter()
        model.train()
        for i in order:
            optimizer.zero_grad()
            head.loss(
                model(bag(items[i].slide_id)).logits, torch.tensor(items[i].target)
            ).backward()
            optimizer.step()
        rates.append(len(items) / (time.perf_counter() - start))
    return rates


def peer_loop(
    cfg: Any, items: list[Any], paths: dict[str, Path], head: Any, epochs: int
) -> list[float]:
    """The per-slide h5 loop: one process, batch size 1, read from disk each epoch."""
    return _peer_epochs(cfg, items, head, epochs, lambda sid: _h5_bag(paths[sid]))


def peer_preloaded(
    cfg: Any, items: list[Any], paths: dict[str, Path], head: Any, epochs: int
) -> tuple[list[float], float]:
    """The h5 loop with every bag read into memory first: (per-epoch rates, read seconds)."""
    start = time.perf_counter()
    bags = {item.slide_id: _h5_bag(paths[item.slide_id]) for item in items}
    read_s = time.perf_counter() - start
    return _peer_epochs(cfg, items, head, epochs, bags.__getitem__), read_s


def _row(case: str, per_epoch: list[float], wall: float, **extra: Any) -> dict[str, Any]:
    return {
        "case": case,
        "slides_per_s": float(np.mean(per_epoch[1:] or per_epoch)),
        "first_epoch_slides_per_s": per_epoch[0],
        "per_epoch": per_epoch,
        "wall_s": wall,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = QUICK if args.quick else FULL

    import torch

    from infra.ray_runtime import connect, shutdown
    from synthetic.mil import write_planted_cohort
    from training.mil.data import BagDataset, targets_from_cohort
    from training.mil.heads import make_head
    from training.mil.job import JobConfig, run_training
    from training.mil.models import MILConfig
    from training.mil.train import TrainConfig, fit

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        cohort = write_planted_cohort(
            str(tmp / "store"),
            n_slides=params["slides"],
            n_tiles=params["tiles"],
            dim=params["dim"],
            seed=0,
        )
        h5_dir = tmp / "h5"
        h5_dir.mkdir()
        paths = write_h5(cohort, h5_dir)
        table = cohort.table
        train, val = table[table["fold"] != 0], table[table["fold"] == 0]
        items, _ = targets_from_cohort(train, "binary", ["label"])
        head = make_head("binary", np.array([i.target[0] for i in items]))
        epochs = params["epochs"]
        # Both sides use the same intra-op threads (the machine's cores, torch's default).
        threads = torch.get_num_threads()
        cfg = TrainConfig(
            model=MILConfig(model="abmil", in_dim=params["dim"], hidden=128, attn_dim=64),
            epochs=epochs,
            patience=epochs,
            max_patches=None,
            lr=2e-4,
            torch_threads=threads,
        )
        rows = []
        start = time.perf_counter()
        rates = peer_loop(cfg, items, paths, head, epochs)
        rows.append(
            _row(
                "h5 per-slide loop (1 process, reads every epoch)",
                rates,
                time.perf_counter() - start,
            )
        )
        start = time.perf_counter()
        rates, read_s = peer_preloaded(cfg, items, paths, head, epochs)
        rows.append(
            _row(
                "h5 loop, all bags preloaded (1 process)",
                rates,
                time.perf_counter() - start,
                preload_s=read_s,
            )
        )

        def bags(part: Any, train_set: bool) -> BagDataset:
            return BagDataset(
                cohort.store_uri,
                targets_from_cohort(part, "binary", ["label"])[0],
                encoder=cohort.encoder,
                train=train_set,
                cache=True,
            )

        start = time.perf_counter()
        local = fit(cfg, bags(train, True), bags(val, False), head)
        rows.append(
            _row(
                "slidebank fit in-process (store, cached)",
                [len(items) / h["train_s"] for h in local.history],
                time.perf_counter() - start,
            )
        )
        started_ray = connect(address="local", num_cpus=2)  # the embedded Ray users get
        for workers, cache in ((1, False), (1, True), (2, True)):
            job = JobConfig(
                store_uri=cohort.store_uri,
                encoder=cohort.encoder,
                num_workers=workers,
                name=f"bench-w{workers}-{'cache' if cache else 'nocache'}",
                cache_bags=cache,
                train=replace(cfg, bags_per_step=workers, torch_threads=max(threads // workers, 1)),
            )
            start = time.perf_counter()
            result = run_training(job, train, val)
            wall = time.perf_counter() - start
            per_epoch = [len(items) / h["train_s"] for h in result.history]
            reads = "bags cached after one scan" if cache else "per-slide store reads every epoch"
            rows.append(
                _row(
                    f"slidebank store + Ray DDP x{workers} ({reads})",
                    per_epoch,
                    wall,
                    ray_overhead_s=wall - sum(h["train_s"] for h in result.history),
                )
            )
        shutdown(started_ray)
        base = rows[0]["slides_per_s"]
        for row in rows:
            row["vs_h5_loop"] = row["slides_per_s"] / base
        print_table(
            rows,
            [
                "case",
                "slides_per_s",
                "vs_h5_loop",
                "first_epoch_slides_per_s",
                "wall_s",
                "ray_overhead_s",
            ],
        )
        write_json(
            args.out,
            {
                "params": params,
                "machine": machine(),
                "torch_threads": threads,
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "results": rows,
                "note": "slides/s: training slides per second of an epoch's training pass (validation "
                "excluded on all sides), mean over epochs after the first; vs_h5_loop: ratio to "
                "the h5 per-slide loop; ray_overhead_s: job wall time not spent in training "
                "passes (worker start-up, validation, reports, checkpoints).",
            },
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
