"""The quality bench: distribution metrics of final samples, each with a paired 95% bootstrap interval.

Every method is sampled on the same evaluation seeds. A `Judge` holds fixed references (the data, the
teacher's samples on other seeds) and draws one set of bootstrap resamples of the seeds, shared by all
methods, so the difference of two methods is judged on the same resampled seeds ("paired"). A claim
"A beats B" needs the interval of the difference to exclude zero. Metrics (docs/quality-bench.md):

* fd:  Frechet distance in the 128-d features of the bundled Fashion-MNIST classifier (train_tools.evaluation.classifier)
* kid: unbiased kernel inception distance (cubic polynomial kernel) in the same features, x 1000
* acc: share of conditional samples the classifier puts in their prompted class
* agree: share of seeds whose sample the classifier puts in the class of the teacher's sample on that seed
* rmse: per-sample RMSE against the teacher on the same seeds, pooled
* fid: Inception FID (pytorch-fid), optional, as the papers' cross-check
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from comfyui_pas.acceptance import frechet_distance

N_BOOT = 400
KID_BOOT = 200


# ---------------------------------------------------------------- metrics with a fixed reference

class FrechetReference:
    """Frechet distances of feature sets to one fixed reference set (mu_r, S_r), fast for resamples.

    FD = |mu - mu_r|^2 + tr S + tr S_r - 2 tr sqrt(R S R), R = S_r^(1/2); with n samples of dimension
    d > n the trace is taken on the n x n Gram matrix of the centred samples times R (same eigenvalues).
    """

    def __init__(self, feats: np.ndarray):
        feats = np.asarray(feats, np.float64)
        self.mu = feats.mean(axis=0)
        self.cov = np.cov(feats, rowvar=False)
        vals, vecs = np.linalg.eigh(self.cov)
        self.root = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
        self.trace = float(np.trace(self.cov))
        self.count = len(feats)

    def distance(self, feats: np.ndarray, rotated: np.ndarray | None = None) -> float:
        """FD of `feats` (n, d) to the reference; `rotated` = feats @ R if already computed."""
        feats = np.asarray(feats, np.float64)
        n, d = feats.shape
        rotated = feats @ self.root if rotated is None else rotated
        centred = rotated - rotated.mean(axis=0)
        if d <= n:
            eig = np.linalg.eigvalsh(centred.T @ centred / (n - 1))
        else:
            eig = np.linalg.eigvalsh(centred @ centred.T / (n - 1))
        mu = feats.mean(axis=0)
        trace = float(((feats - mu) ** 2).sum() / (n - 1))
        return float(((mu - self.mu) ** 2).sum() + trace + self.trace - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_pair(a: np.ndarray, b: np.ndarray) -> float:
    """FD between two feature sets of equal dimension (both estimated from the given rows): the library's."""
    return frechet_distance(torch.from_numpy(np.asarray(a, dtype=np.float64)),
                            torch.from_numpy(np.asarray(b, dtype=np.float64)))


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


class KIDReference:
    """Unbiased MMD^2 (cubic polynomial kernel, Binkowski et al. 2018) against a fixed reference, x 1000."""

    def __init__(self, feats: np.ndarray):
        self.feats = np.asarray(feats, np.float64)
        k = _cubic_kernel(self.feats, self.feats)
        m = len(k)
        self.ref_term = (k.sum() - np.trace(k)) / (m * (m - 1))

    def prepare(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sample kernel matrix and each sample's mean kernel value to the reference."""
        feats = np.asarray(feats, np.float64)
        return _cubic_kernel(feats, feats), _cubic_kernel(feats, self.feats).mean(axis=1)

    def distance(self, prepared, idx: np.ndarray | None = None) -> float:
        k, cross = prepared
        if idx is None:
            idx = np.arange(len(cross))
        kk = k[np.ix_(idx, idx)]
        n = len(idx)
        # Drop the pairs of a resampled seed with itself (its own duplicates too): the unbiased estimator.
        same = idx[:, None] == idx[None, :]
        within = (kk.sum() - kk[same].sum()) / max(1, n * n - int(same.sum()))
        return 1000.0 * float(within + self.ref_term - 2 * cross[idx].mean())


# ---------------------------------------------------------------- the judge

def torch_tensor(values):
    import torch

    return values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def percentile_interval(value: float, boots: np.ndarray) -> Interval:
    """The normal bootstrap interval: value +- 1.96 x the standard deviation over the shared resamples. (A
    percentile interval would sit off the value for FD, which resampled sets with duplicates inflate.)"""
    half = 1.96 * float(np.std(boots, ddof=1))
    return Interval(float(value), float(value) - half, float(value) + half)


@dataclass
class Scored:
    """One method's metrics on the full seed set and on every shared bootstrap resample."""

    values: dict = field(default_factory=dict)
    boots: dict = field(default_factory=dict)


class Judge:
    """Scores methods sampled on the same `n` seeds against fixed references, with shared resamples.

    references: {name: classifier features (m, 128)}, e.g. {"teacher": ..., "data": ...}.
    teacher_finals: the teacher's finals on the evaluation seeds (for RMSE), or None.
    labels: the prompted class of each seed (conditional sampling), or None.
    network: the classifier whose features score the samples (None: the committed one); the references must
    be that network's features.
    """

    def __init__(self, n: int, references: dict, teacher_finals=None, labels=None, n_boot: int = N_BOOT,
                 seed: int = 0, inception_reference: np.ndarray | None = None, network=None):
        rng = np.random.default_rng(seed)
        self.n = n
        self.idx = rng.integers(0, n, size=(n_boot, n))
        self.kid_idx = self.idx[:KID_BOOT]
        self.frechet = {name: FrechetReference(f) for name, f in references.items()}
        self.kid = {name: KIDReference(f) for name, f in references.items()}
        self.teacher = None if teacher_finals is None else np.asarray(teacher_finals, np.float64).reshape(n, -1)
        self.teacher_feats, self.teacher_classes, self.network = None, None, network
        if teacher_finals is not None:
            from train_tools.data.fashion_mnist import to_uint8
            from train_tools.evaluation import classifier

            self.teacher_feats, self.teacher_classes = classifier.features_and_classes(
                to_uint8(torch_tensor(teacher_finals)), self.network)
        self.labels = None if labels is None else np.asarray(labels)
        self.inception = None if inception_reference is None else FrechetReference(inception_reference)

    def score(self, images: np.ndarray, finals=None, inception_feats: np.ndarray | None = None,
              labels="judge") -> Scored:
        """images: uint8 (n, 28, 28) of one method; finals: its model-space samples (n, ...) for RMSE;
        labels: the classes the images should show (default: the judge's per-seed labels; None: no accuracy)."""
        from train_tools.evaluation import classifier

        if len(images) != self.n:
            raise ValueError(f"the judge was built for {self.n} seeds, got {len(images)} samples")
        labels = self.labels if isinstance(labels, str) else labels
        feats, classes = classifier.features_and_classes(images, self.network)
        out = Scored()
        for name, ref in self.frechet.items():
            rotated = feats @ ref.root
            out.values[f"fd_{name}"] = ref.distance(feats, rotated)
            out.boots[f"fd_{name}"] = np.array([ref.distance(feats[i], rotated[i]) for i in self.idx])
        for name, ref in self.kid.items():
            prepared = ref.prepare(feats)
            out.values[f"kid_{name}"] = ref.distance(prepared)
            out.boots[f"kid_{name}"] = np.array([ref.distance(prepared, i) for i in self.kid_idx])
        if self.teacher_feats is not None and finals is not None:
            ref = self.teacher_feats
            out.values["fd_paired"] = frechet_pair(feats, ref)
            out.boots["fd_paired"] = np.array([frechet_pair(feats[i], ref[i]) for i in self.idx])
            same = (classes == self.teacher_classes).astype(np.float64)  # the teacher's garment from this noise
            out.values["agree"], out.boots["agree"] = float(same.mean()), same[self.idx].mean(axis=1)
        if labels is not None:
            hit = (classes == np.asarray(labels)).astype(np.float64)
            out.values["acc"], out.boots["acc"] = float(hit.mean()), hit[self.idx].mean(axis=1)
        if self.teacher is not None and finals is not None:
            sq = ((np.asarray(finals, np.float64).reshape(self.n, -1) - self.teacher) ** 2).mean(axis=1)
            out.values["rmse"], out.boots["rmse"] = float(np.sqrt(sq.mean())), np.sqrt(sq[self.idx].mean(axis=1))
        if self.inception is not None and inception_feats is not None:
            inception = np.asarray(inception_feats, np.float64)
            rotated = inception @ self.inception.root
            out.values["fid"] = self.inception.distance(inception, rotated)
            out.boots["fid"] = np.array([self.inception.distance(inception[i], rotated[i]) for i in self.idx])
        return out

    @staticmethod
    def interval(scored: Scored, metric: str) -> Interval:
        return percentile_interval(scored.values[metric], scored.boots[metric])

    @staticmethod
    def difference(a: Scored, b: Scored, metric: str) -> Interval:
        """a - b with its paired interval (both scored on the same resampled seeds)."""
        return percentile_interval(a.values[metric] - b.values[metric], a.boots[metric] - b.boots[metric])

    @staticmethod
    def relative(a: Scored, b: Scored, metric: str) -> Interval:
        """a / b - 1 with its paired interval."""
        return percentile_interval(a.values[metric] / b.values[metric] - 1, a.boots[metric] / b.boots[metric] - 1)


RMSE_MARGIN = 0.10  # a row that "beats" another must also cut its RMSE by this much


VERDICTS = ("better", "level", "worse")


def interval_verdict(difference: dict) -> str:
    """A paired difference (Interval.as_dict()) of a lower-is-better metric: 'better' / 'worse' where its 95%
    interval lies below / above zero, else 'level'."""
    return "better" if difference["high"] < 0 else "worse" if difference["low"] > 0 else "level"


def verdict(row) -> str:
    """A PAS row against its uncorrected row in FD to the teacher (row["vs_base"]): 'plain' (corrects nothing),
    else its interval_verdict."""
    if not row.get("steps"):
        return "plain"
    return interval_verdict(row["vs_base"]["fd_teacher"])


def beats(difference: dict) -> bool:
    """Whether a row beats another, from their paired relative differences ({metric: Interval.as_dict()}):
    FD to the teacher lower with its 95% interval below zero, and RMSE lower by RMSE_MARGIN."""
    return difference["fd_teacher"]["high"] < 0 and difference["rmse"]["value"] <= -RMSE_MARGIN


def metrics_of(scored: Scored) -> list[str]:
    return [m for m in ("fd_teacher", "fd_paired", "fd_data", "kid_teacher", "kid_data", "acc", "rmse")
            if m in scored.values]


# ---------------------------------------------------------------- report and CLI

METRIC_LABELS = {"fd_teacher": "FD teacher", "fd_paired": "FD teacher, same seeds", "fd_data": "FD data", "kid_teacher": "KID teacher",
                 "kid_data": "KID data", "acc": "class acc", "rmse": "RMSE", "fid": "Inception FID"}


def scored_table(results: dict, baseline: str | None = None) -> str:
    """Each method's metrics with 95% intervals; against `baseline`, the paired relative change of each."""
    from train_tools.tables import markdown_table

    first = next(iter(results.values()))
    metrics = metrics_of(first) + (["fid"] if "fid" in first.values else [])
    rows = []
    for name, scored in results.items():
        row = [name]
        for metric in metrics:
            if metric not in scored.boots:
                row.append(f"{scored.values[metric]:.4g}")
            elif baseline and name != baseline:
                rel = Judge.relative(scored, results[baseline], metric)
                mark = "" if not rel.excludes_zero() else (" (lower)" if rel.high < 0 else " (higher)")
                row.append(f"{scored.values[metric]:.4g} ({100 * rel.value:+.1f}% [{100 * rel.low:+.1f}, "
                           f"{100 * rel.high:+.1f}]){mark}")
            else:
                row.append(str(Judge.interval(scored, metric)))
        rows.append(row)
    return markdown_table(["method", *[METRIC_LABELS[m] for m in metrics]], rows)


def parse_method(text: str):
    """'deis' (ComfyUI's built-in), 'ours:deis' (our plain solver), 'teacher' (Heun at the bench's NFE)."""
    if text == "teacher":
        return "teacher", None
    if text.startswith("ours:"):
        return "ours", text[5:]
    return "builtin", text


def main(argv: list[str] | None = None) -> None:
    import argparse
    import time

    import torch

    from train_tools.bench_setup import MODELS, TEACHER_NFE, BenchSetup, karras

    p = argparse.ArgumentParser(description="Score samplers on the demo model with paired 95% intervals.")
    p.add_argument("--model", choices=MODELS, default="cond")
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--empty-prompt", action="store_true", help="conditional model, unconditional sampling")
    p.add_argument("--n", type=int, default=1000, help="evaluation seeds (and teacher reference seeds)")
    p.add_argument("--nfe", type=int, default=6, help="steps of ComfyUI's karras grid (rho 7)")
    p.add_argument("--methods", nargs="+", default=["euler", "deis", "dpmpp_2m"])
    p.add_argument("--baseline", default=None, help="method the others are compared with (default: the first)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    setup = BenchSetup.create(args.model, args.cfg, args.n, args.empty_prompt)
    started = time.perf_counter()
    judge = setup.judge()
    print(f"{setup.label()}, N {args.n}, karras {args.nfe} steps; references ready in "
          f"{time.perf_counter() - started:.0f} s")
    results = {}
    for text in args.methods:
        t0 = time.perf_counter()
        kind, name = parse_method(text)
        sampler = {"teacher": setup.heun, "ours": setup.pas(name) if name else None,
                   "builtin": setup.builtin(name) if kind == "builtin" else None}[kind]
        grid = karras((TEACHER_NFE + 1) // 2) if kind == "teacher" else karras(args.nfe)
        images, finals = setup.sample(sampler, grid)
        results[text] = judge.score(images, finals)
        print(f"  {text}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(scored_table(results, args.baseline or args.methods[0]))


if __name__ == "__main__":
    main()
