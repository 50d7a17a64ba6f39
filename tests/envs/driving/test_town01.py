"""Town01 map facts: road-level speed records, lane width along the lane, traffic lights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.driving.roadmap import (
    Lane,
    RoadNetwork,
    _build_arrays,
    _record_signs,
    carla_network,
    road_speed_records,
)
from tests.envs.driving.test_driving import TOWN01, needs_town01


def test_record_signs_follow_road_s_in_either_direction():
    recs = [(0.0, 10.0), (5.0, 20.0)]
    arc = np.arange(10.0)
    # a lane driving with the road's s: the second record starts at arc 5
    assert _record_signs(np.arange(10.0), arc, recs) == [(0.0, 10.0), (5.0, 20.0)]
    # a lane driving against s (s from 9 down to 0): 20 first, 10 from s < 5 (arc 5)
    assert _record_signs(np.arange(9.0, -1.0, -1.0), arc, recs) == [(0.0, 20.0), (5.0, 10.0)]


def test_lane_width_is_read_along_the_lane():
    xy = np.stack([np.linspace(0.0, 10.0, 11), np.zeros(11)], 1)
    widths = np.linspace(3.0, 5.0, 11)  # 3 m at the start, 5 m at the end
    net = RoadNetwork("w", [Lane(xy=xy, width=3.0, widths=widths)], [[]], [-1], [], [])
    a = _build_arrays(net)
    np.testing.assert_allclose(a["pt_width"], 3.0 + 0.2 * np.arange(10), rtol=1e-6)
    # the drivable raster widens with it: 2.4 m off the centreline is road near the end only

    def cell(x, y):
        ij = np.floor((np.array([x, y]) - a["grid_origin"]) / a["grid_res"]).astype(int)
        return a["grid_drivable"][tuple(ij)]

    assert not cell(1.0, 2.1) and cell(9.0, 2.1)


@needs_town01
def test_town01_speed_records():
    recs = road_speed_records(Path(TOWN01).read_text())
    assert len(recs) == 26 and all(r == [(0.0, 25 * 0.44704)] for r in recs.values())


@needs_town01
def test_all_town01_light_controlled_connectors_are_controlled():
    """72 light references in Town01.xodr: 71 on the 71 driving connectors of its 12
    signalised junctions, one on a shoulder lane of road 273 (reported, not dropped)."""
    import carla

    text = Path(TOWN01).read_text()
    with pytest.warns(UserWarning, match="road 273 lane 1"):
        net = carla_network(text, "Town01-test")
    cmap = carla.Map("Town01", text)
    refs = {}
    for lm in cmap.get_all_landmarks_of_type("1000001"):
        for lo, hi in lm.get_lane_validities():
            for lid in range(lo, hi + 1):
                if lid:
                    refs[(lm.road_id, lid)] = int(lm.id)
    assert len(refs) == 72
    connectors = {ln.key[0::2]: i for i, ln in enumerate(net.lanes) if ln.junction >= 0}
    assert len(connectors) == 71 and set(connectors) == set(refs) - {(273, 1)}
    assert len(net.signal_issues) == 1 and "Shoulder" in net.signal_issues[0]
    # each connector carries the light of the signal that references it: light ids and
    # signal ids correspond one to one (36 signals in 12 groups)
    pairs = {(net.lane_light[i], refs[k]) for k, i in connectors.items()}
    assert all(net.lane_light[i] >= 0 for i in connectors.values())
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs}) == 36
    assert len(net.light_group) == 36 and len(set(net.light_group)) == 12
