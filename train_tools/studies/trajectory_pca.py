"""How many dimensions does a sampling trajectory span? Per-sample PCA of teacher trajectories.

    python -m train_tools.studies.trajectory_pca --model gmm fashion --out out/trajectory_pca

The PAS paper builds its correction on the observation that a trajectory of the probability-flow ODE lies
in a ~3-dimensional subspace. For each start point this tool runs a fine EDM Heun trajectory (the teacher
of docs/method.md 2, --steps intervals, rho 7, sigma 80 to 0.002; it keeps every state and the model output
there) and computes, by an exact SVD of the centred set of one sample's vectors, the share of that set's
variance each principal component explains. Three sets per sample:

* states:        {x_0, ..., x_N}, the trajectory points (x_0 = x_T, the start);
* directions:    {d_0, ..., d_{N-1}}, the ODE directions d_k = (x_k - D(x_k, sigma_k)) / sigma_k at them;
* x_T + directions: {x_T, d_0, ..., d_{N-1}}, the set whose principal directions PAS uses (docs/method.md 3).
  x_T is sigma_max = 80 times longer than a direction, so the first component of this set is x_T itself
  and explains almost everything by construction; the other two sets are the informative ones.

Prints a Markdown table (mean, spread and the worst sample of the cumulative share of the top 1-4
components), writes <out>/trajectory_pca_<model>.json and draws --figure from every model whose JSON is in
<out> (cumulative explained variance against the number of components); --from-json redraws them only.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from comfyui_pas.grids import EDM_SIGMA_MAX, edm_sigmas
from comfyui_pas.teacher import heun_states
from train_tools.data.seeds import PCA_SEED_START
from train_tools.tables import command_line, markdown_table, write_json

SETS = ("states", "directions", "x_T + directions")
TOP = 4  # components reported in the table
CURVE = 8  # components drawn in the figure
FLOOR = 1e-10  # lowest unexplained share drawn (log axis)
MODEL_TITLES = {"gmm": "Gaussian mixture (128-D, 16 components)", "fashion": "Fashion-MNIST demo model (32x32)"}
DEFAULT_SAMPLES = {"gmm": 512, "fashion": 128}
FIRST_SEED = PCA_SEED_START  # away from the A/B study's training and held-out seeds (train_tools.data.seeds)


def explained_variance(vectors: torch.Tensor) -> torch.Tensor:
    """Explained-variance ratios of the centred set of vectors, largest first, by an exact SVD.

    vectors (m, D) or (B, m, D), one set of m vectors per sample (flattened to D values each); returns (r,)
    or (B, r), r = min(m, D), each row summing to 1 (0 for a set whose vectors are all equal)."""
    if vectors.ndim not in (2, 3) or vectors.shape[-2] < 1:
        raise ValueError(f"need a set of vectors (m, D) or a batch of them (B, m, D), got {tuple(vectors.shape)}")
    flat = vectors.double()
    centred = flat - flat.mean(dim=-2, keepdim=True)
    variance = torch.linalg.svdvals(centred).square()
    total = variance.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, variance / total.clamp_min(1e-300), torch.zeros_like(variance))


def cumulative(ratios: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count): the share the top 1..count components explain together (padded with 1 past the rank)."""
    sums = ratios.cumsum(dim=-1)
    if sums.shape[-1] < count:
        sums = torch.cat([sums, sums[..., -1:].expand(*sums.shape[:-1], count - sums.shape[-1])], dim=-1)
    return sums[..., :count]


def load_model(name):
    """(model, per-sample shape, dtype, chunk size) for the mixture of `make bench` or the demo model."""
    if name == "gmm":
        from train_tools.benches.bench_gmm import GMM_SETTINGS
        from train_tools.data.gmm import GaussianMixtureDenoiser

        return GaussianMixtureDenoiser.random(**GMM_SETTINGS), (GMM_SETTINGS["dim"],), torch.float64, None
    if name == "fashion":
        from demo_model import LATENT_SHAPE, load_demo_model

        return load_demo_model(), LATENT_SHAPE, torch.float32, 64
    raise ValueError(f"unknown model {name!r}")


def trajectory_sets(model, x, steps, chunk_size=None):
    """The three vector sets of every sample: {name: (B, m, D)} along a Heun run over `steps` EDM intervals."""
    sigmas = edm_sigmas(steps).to(x.dtype)
    states, directions = [], []
    for start in range(0, x.shape[0], chunk_size or x.shape[0]):
        part = x[start:start + (chunk_size or x.shape[0])]
        outputs = []
        kept = heun_states(model, part, sigmas, 1, kept_outputs=outputs)  # (steps+1, b, ...)
        states.append(kept.flatten(2).transpose(0, 1).double())
        d = [(kept[k] - outputs[k]) / sigmas[k] for k in range(steps)]
        directions.append(torch.stack(d).flatten(2).transpose(0, 1).double())
    states, directions = torch.cat(states), torch.cat(directions)
    return {"states": states, "directions": directions,
            "x_T + directions": torch.cat([states[:, :1], directions], dim=1)}


def summarise(ratios: torch.Tensor) -> dict:
    """Per component k = 1..CURVE: mean, std, 5th / 95th percentile and minimum over samples of the
    cumulative share, and the mean share of component k alone."""
    sums = cumulative(ratios, CURVE)
    single = torch.cat([ratios, ratios.new_zeros(ratios.shape[0], max(0, CURVE - ratios.shape[1]))], dim=1)[:, :CURVE]
    q = torch.quantile(sums, torch.tensor([0.05, 0.95], dtype=sums.dtype), dim=0)
    return {"mean": sums.mean(0).tolist(), "std": sums.std(0).tolist() if sums.shape[0] > 1 else [0.0] * CURVE,
            "p05": q[0].tolist(), "p95": q[1].tolist(), "min": sums.min(0).values.tolist(),
            "component_mean": single.mean(0).tolist()}


def run_model(name, samples, steps, log=print):
    model, shape, dtype, chunk = load_model(name)
    from train_tools.data.seeds import seeded_noise

    seeds = range(FIRST_SEED, FIRST_SEED + samples)
    x = (seeded_noise(list(seeds), shape) * EDM_SIGMA_MAX).to(dtype)
    started = time.perf_counter()
    with torch.no_grad():
        sets = trajectory_sets(model, x, steps, chunk)
    result = {"model": name, "samples": samples, "seeds": [seeds.start, seeds.stop - 1], "steps": steps,
              "heun_nfe": 2 * steps, "dimension": int(sets["states"].shape[-1]), "sets": {}}
    for set_name, vectors in sets.items():
        result["sets"][set_name] = dict(summarise(explained_variance(vectors)), vectors=int(vectors.shape[1]))
    result["seconds"] = time.perf_counter() - started
    log(f"{name}: {samples} trajectories, {steps} Heun steps, {result['seconds']:.0f} s")
    return result


def markdown(results) -> str:
    """Two tables: the cumulative share of the top 1..4 components (mean +- std over samples, and the worst
    sample), and the share they leave unexplained (mean and worst, scientific notation)."""
    header = ["model", "set (vectors per sample)", *(f"top {k}" for k in range(1, TOP + 1))]
    share, left = [], []
    for r in results:
        for set_name, s in r["sets"].items():
            label = [r["model"], f"{set_name} ({s['vectors']})"]
            share.append(label + [f"{100 * s['mean'][k]:.2f}% ± {100 * s['std'][k]:.2f} (min {100 * s['min'][k]:.2f}%)"
                                  for k in range(TOP)])
            left.append(label + [f"{max(0.0, 1 - s['mean'][k]):.1e} (worst {max(0.0, 1 - s['min'][k]):.1e})"
                                 for k in range(TOP)])
    return ("Cumulative explained variance of the top k components (mean ± std over samples, worst sample):\n\n"
            + markdown_table(header, share)
            + "\n\nShare left unexplained, 1 - cumulative (mean over samples, worst sample):\n\n"
            + markdown_table(header, left))


def draw(results, path):
    """Cumulative explained variance (mean, 5-95% band over samples) against components, one panel per model,
    and the unexplained share on a log scale below it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colours = {"states": "#1f77b4", "directions": "#d62728", "x_T + directions": "#7f7f7f"}
    figure = Figure(figsize=(10, 6.4), dpi=100)
    axes = figure.subplots(2, len(results), squeeze=False, sharex=True)
    k = list(range(1, CURVE + 1))
    for column, r in enumerate(results):
        top, bottom = axes[0, column], axes[1, column]
        for set_name, s in r["sets"].items():
            style = dict(color=colours[set_name], marker="o", markersize=4,
                         linestyle="--" if set_name == "x_T + directions" else "-",
                         zorder=3 if set_name == "states" else 2)
            top.plot(k, s["mean"], label=f"{set_name} ({s['vectors']} vectors)", **style)
            top.fill_between(k, s["p05"], s["p95"], color=colours[set_name], alpha=0.15, linewidth=0)
            unexplained = [max(1 - v, FLOOR) for v in s["mean"]]
            bottom.plot(k, unexplained, **style)
            bottom.fill_between(k, [max(1 - v, FLOOR) for v in s["p95"]], [max(1 - v, FLOOR) for v in s["p05"]],
                                color=colours[set_name], alpha=0.15, linewidth=0)
        top.set_title(f"{MODEL_TITLES.get(r['model'], r['model'])}\n{r['samples']} trajectories, Heun "
                      f"{r['steps']} steps", fontsize=10)
        top.axhline(1.0, color="black", linewidth=0.5)
        for panel in (top, bottom):
            panel.axvline(3, color="black", linestyle=":", linewidth=1)
        top.text(2.92, 0.705, "3 components\n(the paper's ~3-D claim)", fontsize=7, va="bottom", ha="right")
        top.set_ylim(0.7, 1.005)
        top.set_ylabel("cumulative explained variance")
        top.grid(alpha=0.3)
        top.legend(loc="lower right", fontsize=8)
        bottom.set_yscale("log")
        bottom.set_ylim(FLOOR, 1)
        bottom.set_xlabel("number of principal components")
        bottom.set_ylabel("unexplained share (1 - cumulative)")
        bottom.set_xticks(k)
        bottom.grid(alpha=0.3, which="both")
    figure.suptitle("Per-sample PCA of teacher trajectories: mean over samples, band = 5th-95th percentile",
                    fontsize=11)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return str(path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", choices=sorted(MODEL_TITLES), default=["gmm", "fashion"])
    parser.add_argument("--out", default=os.path.join("out", "trajectory_pca"), help="folder for the JSON results")
    parser.add_argument("--samples", type=int, help="trajectories per model (default: gmm 512, fashion 128)")
    parser.add_argument("--steps", type=int, default=40, help="EDM Heun intervals of each trajectory (2 calls each)")
    parser.add_argument("--figure", default=os.path.join("docs", "images", "trajectory_pca.png"),
                        help="PNG drawn from every model's JSON in --out ('' to skip)")
    parser.add_argument("--from-json", action="store_true", help="run nothing: table and figure from --out's JSON")
    return parser.parse_args(argv)


def report(out: str, figure: str) -> list[dict]:
    """Every model's results in `out`: printed as a table, drawn to `figure` unless it is ''."""
    results = []
    for name in sorted(MODEL_TITLES):
        path = os.path.join(out, f"trajectory_pca_{name}.json")
        if os.path.isfile(path):
            with open(path) as handle:
                results.append(json.load(handle))
    print(markdown(results))
    if figure:
        print(f"figure: {draw(results, figure)}")
    return results


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    command = command_line("train_tools.studies.trajectory_pca", argv)
    for name in [] if args.from_json else args.model:
        result = run_model(name, args.samples or DEFAULT_SAMPLES[name], args.steps)
        result["command"] = command
        write_json(os.path.join(args.out, f"trajectory_pca_{name}.json"), result)
    return report(args.out, args.figure)


if __name__ == "__main__":
    main()
