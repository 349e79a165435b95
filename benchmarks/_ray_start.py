"""``ray start`` for a worker node that keeps every server on loopback.

    python -m benchmarks._ray_start --address=127.0.0.1:PORT --node-ip-address=127.0.0.1 ...

Ray's loopback mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, what
:mod:`infra.ray_runtime` uses so that every server binds 127.0.0.1) also makes the
``ray start`` command refuse to add a worker node (a guard meant for Windows and macOS),
while turning it on makes the command rewrite ``127.0.0.1`` to this machine's routable
address, where a loopback head does not listen. This runs the same ``ray start`` command
with the guard passed and the head's loopback address kept as given; the raylet and
agents it spawns inherit the environment's ``0`` and bind loopback, which
``benchmarks/cluster4.py`` checks with a census of the listening sockets.
"""

from __future__ import annotations

import sys


def main() -> None:
    from ray._private import ray_constants, services
    from ray.scripts import scripts

    services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1 as given
    ray_constants.ENABLE_RAY_CLUSTER = True  # this process only: its children read the env
    sys.argv = ["ray", "start", *sys.argv[1:]]
    scripts.main()


if __name__ == "__main__":
    main()
