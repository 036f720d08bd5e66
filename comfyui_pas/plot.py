"""The per-step error figure: each step's error against the teacher with and without the correction."""
from __future__ import annotations

import numpy as np


def _figure(report, title=None):
    from matplotlib.figure import Figure

    steps = report["steps"]
    index = [s["step"] for s in steps]
    plain = [s["loss_plain"] for s in steps]
    corrected = [s["loss_corrected"] if s["accepted"] else s["loss_plain"] for s in steps]
    loss = report.get("settings", {}).get("loss", "l1").upper()
    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(index, plain, "o-", color="#888888", label="uncorrected step")
    axes.plot(index, corrected, "s-", color="#1f77b4", label="with PAS")
    accepted = [s for s in steps if s["accepted"]]
    if accepted:
        axes.scatter([s["step"] for s in accepted], [s["loss_corrected"] for s in accepted], s=140,
                     facecolors="none", edgecolors="#d62728", linewidths=2, label="corrected step", zorder=3)
    axes.set_xlabel("step")
    axes.set_ylabel(f"{loss} error vs teacher after the step")
    axes.set_xticks(index)
    if max(plain) > 0:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    params = len(accepted) * len(accepted[0]["coordinates"]) if accepted else 0
    axes.set_title(title or f"PAS: {len(accepted)} corrected steps, {params} parameters", fontsize=10)
    figure.tight_layout()
    return figure


def error_curve_image(report, title=None) -> np.ndarray:
    """The figure as an RGB uint8 array (H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = _figure(report, title)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_error_curve(report, path, title=None) -> str:
    """Write the figure as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = _figure(report, title)
    FigureCanvasAgg(figure).print_png(str(path))
    return str(path)
