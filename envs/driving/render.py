"""Host-side rendering of driving episodes to PNG frames and GIFs (matplotlib + Pillow).

    states = collect_episode(env, params, expert_policy, key, route=0, steps=600)
    save_gif(states, params, "episode.gif", every=2)
    save_png(states, params, "frame.png", t=100)

`states` is a DrivingState whose leaves carry a leading time axis (what a
lax.scan returns). Drawn: drivable area, lane centrelines, the route (done
part dimmed), stop lines coloured by their light, background vehicles (blue)
and the ego (red), in a window that follows the ego (`view` metres) or the
whole map (`view=None`). The y axis is flipped so CARLA maps look as in CARLA.
"""

from __future__ import annotations

import io
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from envs.driving import sim

LIGHT_COLOURS = {sim.GREEN: "limegreen", sim.YELLOW: "gold", sim.RED: "red"}


def collect_episode(env, params, policy, key, route: int | None = None, steps: int = 500):
    """Run `policy(state, params) -> action` and return the stacked states until done."""

    def body(carry, k):
        st, done = carry
        r = env.step(k, st, policy(st, params), params)
        new = jax.tree.map(lambda a, b: jnp.where(done, a, b), st, r.state)
        return (new, done | r.terminated | r.truncated), (st, done)

    @jax.jit
    def run(key):
        if route is None:
            _, s = env.reset(key, params)
        else:
            _, s = env.reset_to_route(key, params, route)
        return jax.lax.scan(body, (s, jnp.array(False)), jax.random.split(key, steps))[1]

    states, done = run(key)
    n = int(np.argmax(np.asarray(done))) if bool(np.asarray(done).any()) else steps
    return jax.tree.map(lambda x: np.asarray(x)[: max(n, 1)], states)


def _frame(ax, states, params, t: int, view: float | None, cache: dict) -> None:
    import matplotlib.patches as mpatches

    m, rb = params.map, params.routes
    st = jax.tree.map(lambda x: x[t], states)
    if "road" not in cache:
        d = np.asarray(m.grid_drivable).T
        o, r = np.asarray(m.grid_origin), float(m.grid_res)
        cache["road"] = (d, [o[0], o[0] + d.shape[1] * r, o[1], o[1] + d.shape[0] * r])
        cache["pts"] = np.asarray(m.pt_xy)
        lane = np.asarray(m.pt_lane)
        cache["breaks"] = np.nonzero(np.diff(lane) != 0)[0] + 1
    d, extent = cache["road"]
    ax.imshow(d, origin="lower", extent=extent, cmap="Greys", vmin=0, vmax=2.5,
              interpolation="nearest")
    for seg in np.split(cache["pts"], cache["breaks"]):
        ax.plot(seg[:, 0], seg[:, 1], color="white", lw=0.5, alpha=0.8)
    r = int(st.route)
    n = int(rb.num[r])
    rxy = np.asarray(rb.xy[r, :n])
    prog = int(st.prog)
    ax.plot(rxy[: prog + 1, 0], rxy[: prog + 1, 1], color="tab:purple", lw=2, alpha=0.3)
    ax.plot(rxy[prog:, 0], rxy[prog:, 1], color="tab:purple", lw=2, alpha=0.8)
    # stop lines
    lights = np.asarray(sim.light_states(m, st.t * params.dt, jnp.asarray(st.light_offset),
                                         params.green_s, params.yellow_s, params.allred_s))
    lane_light = np.asarray(m.lane_light)
    for lane in np.nonzero(lane_light >= 0)[0]:
        p = int(m.lane_start[lane])
        xy, yaw = np.asarray(m.pt_xy[p]), float(m.pt_yaw[p])
        nrm = np.array([-np.sin(yaw), np.cos(yaw)]) * 0.5 * float(m.pt_width[p])
        ax.plot([xy[0] - nrm[0], xy[0] + nrm[0]], [xy[1] - nrm[1], xy[1] + nrm[1]],
                color=LIGHT_COLOURS[int(lights[lane_light[lane]])], lw=2.5)
    # vehicles
    vxy, vcs = sim.veh_pose(m, jnp.asarray(st.veh_pt), jnp.asarray(st.veh_u))
    vyaw = np.arctan2(np.asarray(vcs[:, 1]), np.asarray(vcs[:, 0]))
    boxes = [(np.asarray(vxy[i]), float(vyaw[i]), "tab:blue") for i in range(len(st.veh_pt))
             if bool(st.veh_active[i])]
    boxes.append((np.array([st.x, st.y]), float(st.yaw), "tab:red"))
    for xy, yaw, colour in boxes:
        corners = np.asarray(sim.box_corners(jnp.asarray(xy), jnp.asarray(yaw)))
        ax.add_patch(mpatches.Polygon(corners, closed=True, fc=colour, ec="k", lw=0.5))
    if view is None:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[3], extent[2])
    else:
        ax.set_xlim(st.x - view, st.x + view)
        ax.set_ylim(st.y + view, st.y - view)
    ax.set_aspect("equal")
    ax.set_title(f"t={int(st.t) * float(params.dt):.1f}s  v={float(st.v):.1f} m/s  "
                 f"route {r}: {100 * float(rb.cum[r, prog]) / float(rb.length[r]):.0f}%",
                 fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def render_frames(states, params, every: int = 1, view: float | None = 40.0,
                  size: float = 5.0, dpi: int = 80) -> list:
    """PIL images of every `every`-th state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    t_len = len(np.asarray(states.t))
    cache: dict = {}
    images = []
    fig, ax = plt.subplots(figsize=(size, size), dpi=dpi)
    for t in range(0, t_len, every):
        ax.clear()
        _frame(ax, states, params, t, view, cache)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        buf.seek(0)
        images.append(Image.open(buf).convert("P", palette=Image.Palette.ADAPTIVE))
    plt.close(fig)
    return images


def save_png(states, params, path: str | Path, t: int = 0, view: float | None = 40.0) -> None:
    render_frames(jax.tree.map(lambda x: x[t: t + 1], states), params, view=view)[0].save(path)


def save_gif(states, params, path: str | Path, every: int = 2, view: float | None = 40.0,
             fps: float = 10.0) -> None:
    frames = render_frames(states, params, every=every, view=view)
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                   duration=int(1000 * every / fps / max(every, 1)) * every)
