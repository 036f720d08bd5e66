"""Draw docs/images/icon.png, the pack's Registry icon (256 x 256 PNG; the spec allows up to 800 x 400).

Grey curves are teacher trajectories from noise (left) to data (right); the orange polyline is a
5-step solver drifting off its trajectory; the teal one is the same steps with PAS corrections.
Run: .venv/bin/python scripts/make_icon.py
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "images", "icon.png")
SIZE_PX = 256


def trajectory(t, start, end):
    """A smooth path from start (t=0) to end (t=1) that bends like a probability-flow ODE solution."""
    return end + (start - end) * (1 - t) ** 1.6 * (1 + 0.35 * np.sin(np.pi * t))


def main() -> None:
    fig = plt.figure(figsize=(1, 1), dpi=SIZE_PX)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((0.03, 0.03), 0.94, 0.94, boxstyle="round,pad=0,rounding_size=0.16",
                                facecolor="#1d2330", edgecolor="none"))
    t = np.linspace(0, 1, 200)
    x = 0.12 + 0.72 * t
    for start in np.linspace(0.18, 0.86, 6):
        ax.plot(x, trajectory(t, start, 0.52), color="#7d8596", linewidth=0.9, alpha=0.8, solid_capstyle="round")
    steps = np.linspace(0, 1, 6)
    exact = trajectory(steps, 0.86, 0.52)
    drift = exact + np.array([0.0, 0.05, 0.09, 0.11, 0.12, 0.12])  # plain Euler falls behind the bend
    sx = 0.12 + 0.72 * steps
    ax.plot(sx, drift, color="#f08a3c", linewidth=2.0, marker="o", markersize=2.6, solid_capstyle="round")
    ax.plot(sx, exact, color="#3cc7b4", linewidth=2.2, marker="o", markersize=2.8, solid_capstyle="round")
    ax.plot([0.84], [0.52], marker="o", markersize=5.5, color="#ffffff")
    ax.text(0.5, 0.085, "PAS", color="#ffffff", fontsize=13, fontweight="bold", ha="center", va="bottom",
            family="DejaVu Sans")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    fig.savefig(OUT, dpi=SIZE_PX, transparent=True)
    plt.close(fig)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
