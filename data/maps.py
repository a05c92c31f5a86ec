"""Maps of events: TMQ as the background, TC and AR masks as coloured outlines."""

import matplotlib.lines
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from data.layouts import CLASSES

# Outline colour per event class (index into data.CLASSES).
COLORS = {1: "#d62728", 2: "#1f77b4"}  # tropical cyclone red, atmospheric river blue


def _panel(ax, tmq, mask, title):
    height, width = tmq.shape
    # Rows run south to north in CAM5 files; extent maps them to degrees.
    extent = (0, 360, -90, 90)
    image = ax.imshow(tmq, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    lon = np.linspace(0, 360, width)
    lat = np.linspace(-90, 90, height)
    for cls, color in COLORS.items():
        if (mask == cls).any():
            ax.contour(lon, lat, (mask == cls).astype(np.float32), levels=[0.5],
                       colors=color, linewidths=1.2)
    ax.set_title(title)
    ax.set_xlabel("longitude (deg E)")
    ax.set_ylabel("latitude (deg N)")
    return image


def plot_events(path, tmq, prediction, truth=None, title=None):
    """Writes a PNG map of predicted (and, if given, true) events.

    Args:
        path: the PNG file to write.
        tmq: (H, W) total precipitable water (TMQ, kg m-2), the background.
        prediction: (H, W) class ids predicted.
        truth: (H, W) true class ids, drawn in a second panel. Defaults to None.
        title: a title for the figure, e.g. the input file name.

    Returns:
        `path`.
    """
    tmq = np.asarray(tmq, np.float32)
    for name, mask in (("prediction", prediction), ("truth", truth)):
        if mask is not None and np.shape(mask) != tmq.shape:
            raise ValueError(f"{name} has shape {np.shape(mask)}, expected {tmq.shape} like tmq")
    panels = [("prediction", prediction)] + ([("truth", truth)] if truth is not None else [])
    # A Figure of its own drawn by Agg: no pyplot, so the process's backend
    # (a notebook's, say) is left alone and no display is needed.
    fig = Figure(figsize=(7 * len(panels), 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, mask) in zip(axes[0], panels, strict=True):
        image = _panel(ax, tmq, np.asarray(mask), name)
    fig.subplots_adjust(left=0.07, right=0.89, bottom=0.22, top=0.85, wspace=0.2)
    fig.colorbar(image, cax=fig.add_axes([0.91, 0.22, 0.012, 0.63]), label="TMQ (kg m$^{-2}$)")
    handles = [matplotlib.lines.Line2D([], [], color=c, label=CLASSES[k].replace("_", " "))
               for k, c in COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path
