"""Start CARLA servers for the CARLA envs (off-screen, one per env, distinct ports).

    python scripts/carla_server.py --carla-root /opt/CARLA_0.9.16 --num 2 --port 2000
    python scripts/carla_server.py --carla-root /opt/CARLA_0.9.16 --num 4 --gpus 0,1

Starts `--num` CarlaUE4.sh processes with -RenderOffScreen on ports port, port + 3,
... (each server also uses the two ports above its RPC port), waits until every
port answers, prints the flags for the studies (--env carla --carla-port ...) and
keeps them running until Ctrl-C (then stops them). Logs: runs/carla_logs/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.carla.server import launch_servers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--carla-root", default=os.environ.get("CARLA_ROOT", ""),
                    help="CARLA release folder holding CarlaUE4.sh (default $CARLA_ROOT)")
    ap.add_argument("--num", type=int, default=1, help="servers to start")
    ap.add_argument("--port", type=int, default=2000, help="RPC port of the first server")
    ap.add_argument("--gpus", default="", help="comma list of GPU indices (round-robin)")
    ap.add_argument("--timeout", type=float, default=300.0, help="s to wait for each port")
    args = ap.parse_args()
    if not args.carla_root:
        ap.error("--carla-root (or $CARLA_ROOT) is required")
    gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    print(f"starting {args.num} CARLA server(s) from {args.carla_root} ...", flush=True)
    servers = launch_servers(args.carla_root, args.num, args.port, gpus, args.timeout)
    ports = ",".join(str(s.port) for s in servers)
    print(f"ready: ports {ports}\nuse: --env carla --carla-host localhost --carla-port {ports}"
          f"\n     (CARLA_HOST=localhost CARLA_PORT={servers[0].port} for the live test)\n"
          "Ctrl-C stops them.", flush=True)
    try:
        while all(s.alive() for s in servers):
            time.sleep(5.0)
        dead = [s.port for s in servers if not s.alive()]
        print(f"server(s) on port(s) {dead} exited; stopping the others", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
