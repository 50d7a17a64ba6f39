"""Export the OpenDRIVE map of a running CARLA server, for the offline driving env.

    python scripts/export_carla_map.py --host localhost --port 2000 --out maps/
    python scripts/export_carla_map.py --town Town02 --out maps/   # load a town first

Writes <out>/<MapName>.xodr (world.get_map().to_opendrive()); point the env
at it with make_driving("<MapName>") after `export MO_RL_CARLA_DIR=<out>`,
or pass the .xodr path as the map. Needs the `carla` client package and a
server; the env itself never needs one.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, default=2000)
    ap.add_argument("--town", default=None, help="load this town before exporting")
    ap.add_argument("--out", default=".")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    import carla

    client = carla.Client(args.host, args.port)
    client.set_timeout(args.timeout)
    world = client.load_world(args.town) if args.town else client.get_world()
    cmap = world.get_map()
    name = cmap.name.split("/")[-1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.xodr"
    path.write_text(cmap.to_opendrive())
    check = carla.Map(name, path.read_text())  # parses offline, as the env will
    print(f"wrote {path} ({len(check.get_topology())} lane segments, "
          f"{len(check.get_all_landmarks_of_type('1000001'))} traffic-light references)")


if __name__ == "__main__":
    main()
