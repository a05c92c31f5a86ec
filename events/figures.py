"""Figures of events: frequency and genesis maps, lifetime and speed histograms, frames.

Maps have coastlines drawn as the 0.5 contour of global-land-mask's land
mask (a 1 km grid shipped inside that package, so nothing is downloaded at
run time), averaged onto a 0.5-degree grid. Every figure is a `Figure` of
its own drawn by Agg: the process's matplotlib backend is left alone.

    write_maps(climatology.to_dataset(), "events/", period="2106-01-01 to 2106-12-31")
    write_histograms(tracks, "events/")
"""

import functools
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_CLASS_TITLES = {"tropical_cyclone": "tropical cyclones", "atmospheric_river": "atmospheric rivers"}


@functools.lru_cache(maxsize=1)
def land_fraction(step=0.5):
    """`(lat, lon, fraction)`: the land fraction of `step`-degree cells, longitude 0..360.

    Loading global-land-mask takes seconds (a 1 km grid), so the result is
    kept in `$CLIMSEG_CACHE` (default ~/.cache/climseg) after the first time.
    """
    cache = os.path.join(os.environ.get("CLIMSEG_CACHE", os.path.join(
        os.path.expanduser("~"), ".cache", "climseg")), f"land-fraction-{step:g}.npz")
    try:
        with np.load(cache) as stored:
            return stored["lat"], stored["lon"], stored["fraction"]
    except (OSError, KeyError, ValueError):
        pass
    lat, lon, fraction = _land_fraction(step)
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.tmp-{os.getpid()}.npz"
        np.savez_compressed(tmp, lat=lat, lon=lon, fraction=fraction)
        os.replace(tmp, cache)
    except OSError:  # a read-only home: compute again next time
        pass
    return lat, lon, fraction


def _land_fraction(step):
    from global_land_mask import globe

    lat = np.arange(-90.0 + step / 2, 90.0, step)
    lon = np.arange(step / 2, 360.0, step)
    # Sample each cell at 3 x 3 points of the package's mask and average; the
    # axes broadcast, so the mask is read row by row.
    offsets = (np.arange(3) + 0.5) / 3 * step - step / 2
    sub_lat = (lat[:, None] + offsets[None, :]).ravel()
    sub_lon = (lon[:, None] + offsets[None, :]).ravel()
    lon180 = np.where(sub_lon > 180.0, sub_lon - 360.0, sub_lon)
    land = globe.is_land(sub_lat[:, None], lon180[None, :])
    fraction = land.reshape(len(lat), 3, len(lon), 3).mean(axis=(1, 3))
    return lat, lon, fraction


def _coastlines(ax):
    lat, lon, fraction = land_fraction()
    ax.contour(lon, lat, fraction, levels=[0.5], colors="k", linewidths=0.5)


def _figure(panels, width=7.0, height=3.6):
    fig = Figure(figsize=(width, height * panels))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(panels, 1, squeeze=False)[:, 0]


def write_maps(climatology, out_dir, period=""):
    """Writes frequency.png and genesis.png from a climatology Dataset; returns their paths.

    Args:
        climatology: `Climatology.to_dataset()` (or climatology.nc opened with xarray).
        out_dir: where to write.
        period: the dates covered, shown in the titles.
    """
    paths = []
    lon, lat = climatology["lon"].values, climatology["lat"].values
    for variable, what, cmap in (("frequency", "fraction of time in an event", "viridis"),
                                 ("genesis_count", "tracks starting per cell", "magma_r")):
        events = list(climatology["event"].values)
        fig, axes = _figure(len(events))
        for ax, event in zip(axes, events, strict=True):
            values = climatology[variable].sel(event=event).values
            mesh = ax.pcolormesh(lon, lat, values, cmap=cmap, shading="nearest")
            _coastlines(ax)
            ax.set_xlim(0, 360)
            ax.set_ylim(-90, 90)
            ax.set_title(f"{_CLASS_TITLES.get(event, event)}: {what}"
                         + (f"\n{period}" if period else ""), fontsize=9)
            ax.set_ylabel("latitude (deg N)")
            fig.colorbar(mesh, ax=ax)
        axes[-1].set_xlabel("longitude (deg E)")
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"{variable.split('_')[0]}.png"))
        fig.savefig(paths[-1], dpi=100)
    return paths


def write_histograms(tracks, out_dir):
    """Writes lifetime.png and speed.png (per class) from the track rows; returns their paths."""
    paths = []
    for column, label, name in (("lifetime_hours", "lifetime (hours)", "lifetime"),
                                ("mean_speed_kmh", "mean speed (km/h)", "speed")):
        fig, (ax,) = _figure(1, height=3.6)
        for event, title in _CLASS_TITLES.items():
            values = [float(t[column]) for t in tracks if t["class"] == event]
            values = [v for v in values if np.isfinite(v)]
            if values:
                ax.hist(values, bins=20, alpha=0.6, label=f"{title} ({len(values)})")
        ax.set_xlabel(label)
        ax.set_ylabel("tracks")
        ax.legend(frameon=False)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"{name}.png"))
        fig.savefig(paths[-1], dpi=100)
    return paths


def write_frames(series, ids_of, out_dir, fields=None, min_area_km2=0.0):
    """One PNG per time step (frame-00000.png, ...): masks on TMQ, dated; returns the paths.

    `ffmpeg -i frame-%05d.png film.mp4` turns them into a film. Without
    `fields` (an `events.intensity.FieldSource` with TMQ) the background is blank.
    """
    from data.maps import plot_events
    from events.series import track_id_planes

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for index, mask, _ in track_id_planes(series, range(len(series)), ids_of, min_area_km2):
        when = series.steps[index][3]
        tmq = fields.read(when)["TMQ"] if fields is not None and "TMQ" in fields.variables \
            else np.zeros(series.grid.shape)
        # plot_events draws rows south to north.
        order = np.argsort(series.grid.lat)
        path = os.path.join(out_dir, f"frame-{index:05d}.png")
        plot_events(path, tmq[order], mask[order], title=f"{when}")
        paths.append(path)
    if fields is not None:
        fields.close()
    return paths
