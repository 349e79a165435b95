"""Watchdog for an embedded Ray: when its driver dies, end what the driver's Ray left behind.

Started by :func:`infra.ray_runtime.connect` as ``python _ray_reaper.py <raylet pid>`` with
its stdin the read end of a pipe only the driver holds. When the driver exits, however it
exits (``kill -9`` included), the pipe reaches end-of-file. The GCS and raylet follow the
driver by themselves, but Ray's dashboard and runtime-env agents first try to report the
raylet's death to the (dead) GCS for 60 s, serving ``/metrics`` meanwhile; this script ends
every process that Ray started for that raylet (``RAY_RAYLET_PID`` in its environment).

A standalone script (only the standard library and psutil) so that it starts in a fraction
of a second and never imports slidebank or Ray.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    raylet_pid = argv[1]
    sys.stdin.buffer.read()  # blocks until the driver closes the pipe or dies
    import psutil

    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RAY_RAYLET_PID") == raylet_pid:
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    with_raylet = [p for p in [_process(int(raylet_pid))] if p is not None]
    for proc in with_raylet:
        try:
            proc.kill()
        except psutil.Error:
            continue
    return 0


def _process(pid: int):  # psutil is imported late on purpose (start-up speed)
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc if proc.name().startswith("raylet") else None
    except psutil.Error:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
