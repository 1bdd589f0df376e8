"""Evaluation on an MVTec-layout category: image and pixel metrics, throughput, JSON + PNG."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from scorer.data import (
    DEFAULT_MAX_PIXELS,
    LabelledSample,
    iter_batches,
    load_reference,
    mvtec_test_samples,
    read_image,
    read_mask,
)
from scorer.methods import LayerReference, Method, ScoreResult, score_layers, uses_references


@dataclass
class EvalReport:
    method: str
    model_version: str
    category: str
    n_good: int
    n_defect: int
    image_auroc: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    pixel_auroc: float
    pro: float
    images_per_second: float
    latency_ms_mean: float
    false_positive_rate: float
    per_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    # 95 % bootstrap intervals (images resampled within good and defect): with 8 images per
    # defect kind and 50 good ones, a difference of a few hundredths is within the noise.
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class ScoredSample:
    sample: LabelledSample
    image: np.ndarray
    score: float
    anomalous: bool
    anomaly_map: np.ndarray
    mask: np.ndarray | None


def pro_auc(maps: list[np.ndarray], masks: list[np.ndarray], fpr_limit: float = 0.3) -> float:
    """Per-region overlap averaged over ground-truth components, integrated over FPR ∈ [0, limit]
    and divided by the limit (MVTec-AD AUPRO convention). NaN without defect regions."""
    regions: list[np.ndarray] = []
    negatives = []
    for amap, mask in zip(maps, masks, strict=True):
        m = mask.astype(np.uint8)
        n, labels = cv2.connectedComponents(m, connectivity=8)
        regions += [np.sort(amap[labels == k]) for k in range(1, n)]
        negatives.append(amap[~mask])
    if not regions:
        return float("nan")
    neg = np.concatenate(negatives)
    if neg.size == 0:
        return float("nan")
    thresholds = np.unique(np.quantile(neg, 1.0 - np.linspace(0.0, fpr_limit, 301)))[::-1]
    neg_sorted = np.sort(neg)
    fpr = 1.0 - np.searchsorted(neg_sorted, thresholds, side="right") / neg.size
    pro = np.mean(
        [1.0 - np.searchsorted(r, thresholds, side="right") / r.size for r in regions], axis=0
    )
    keep = fpr <= fpr_limit + 1e-12
    fpr, pro = np.concatenate([[0.0], fpr[keep]]), np.concatenate([[pro[keep][0]], pro[keep]])
    if fpr[-1] < fpr_limit:  # extend flat to the limit
        fpr, pro = np.append(fpr, fpr_limit), np.append(pro, pro[-1])
    return float(np.trapezoid(pro, fpr) / fpr_limit)


def _safe_auroc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else float("nan")


def decision_metrics(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F1) of 0/1 decisions ``pred`` against labels ``y``."""
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def bootstrap_ci(
    y: np.ndarray,
    score: np.ndarray,
    pred: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of image AUROC and F1, resampling good and defect images apart
    (so every resample has both); empty without both classes."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if not len(pos) or not len(neg):
        return {}
    rng = np.random.default_rng(seed)
    aurocs, f1s = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        aurocs[b] = roc_auc_score(y[idx], score[idx])
        f1s[b] = decision_metrics(y[idx], pred[idx])[2]
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    lo_hi = lambda v: (float(np.quantile(v, q[0])), float(np.quantile(v, q[1])))  # noqa: E731
    return {"image_auroc": lo_hi(aurocs), "f1": lo_hi(f1s)}


def _references(
    model: Method, batch: list[LabelledSample], images: list[np.ndarray], max_pixels: int
) -> list[LayerReference] | None:
    """The stored references of each test image, for a method that uses them (a data set
    written with ``simulate dataset --reference``); None otherwise."""
    if not uses_references(model):
        return None
    return [
        load_reference(s.path, img.shape[:2], model.channels, max_pixels) or LayerReference()
        for s, img in zip(batch, images, strict=True)
    ]


def score_category(
    model: Method, category: Path, batch_size: int = 8, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[list[ScoredSample], float]:
    """Score every test image (with its references, for a method that uses them); returns the
    samples and images/s (warm-up batch excluded)."""
    samples = mvtec_test_samples(category)
    batches = list(iter_batches(samples, batch_size))
    warm = [read_image(s.path, model.channels, max_pixels) for s in batches[0]]
    score_layers(model, warm, _references(model, batches[0], warm, max_pixels))
    out: list[ScoredSample] = []
    busy = 0.0
    for batch in batches:
        images = [read_image(s.path, model.channels, max_pixels) for s in batch]
        refs = _references(model, batch, images, max_pixels)
        start = time.perf_counter()
        results: list[ScoreResult] = score_layers(model, images, refs)
        busy += time.perf_counter() - start
        for s, img, r in zip(batch, images, results, strict=True):
            mask = read_mask(s, img.shape[:2])
            out.append(ScoredSample(s, img, r.score, r.anomalous, r.anomaly_map, mask))
    return out, len(samples) / max(busy, 1e-9)


def compute_report(
    model: Method, category: Path, scored: list[ScoredSample], images_per_second: float
) -> EvalReport:
    y = np.array([s.sample.label for s in scored])
    score = np.array([s.score for s in scored])
    pred = np.array([s.anomalous for s in scored], dtype=int)
    precision, recall, f1 = decision_metrics(y, pred)
    with_mask = [s for s in scored if s.mask is not None]
    if with_mask and any(s.mask.any() for s in with_mask):
        pix_y = np.concatenate([s.mask.ravel() for s in with_mask])
        pix_s = np.concatenate([s.anomaly_map.ravel() for s in with_mask])
        pixel_auroc = _safe_auroc(pix_y, pix_s)
        pro = pro_auc([s.anomaly_map for s in with_mask], [s.mask for s in with_mask])
    else:
        pixel_auroc = pro = float("nan")
    per_kind: dict[str, dict[str, float]] = {}
    good = y == 0
    for kind in sorted({s.sample.kind for s in scored}):
        sel = np.array([s.sample.kind == kind for s in scored])
        per_kind[kind] = {
            "n": int(sel.sum()),
            "flagged_rate": float(pred[sel].mean()),
            "mean_score": float(score[sel].mean()),
            # this kind against the good images (NaN for "good" itself)
            "image_auroc": _safe_auroc(y[sel | good], score[sel | good]),
        }
    return EvalReport(
        method=type(model).name,
        model_version=model.model_version,
        category=str(category),
        n_good=int(good.sum()),
        n_defect=int((~good).sum()),
        image_auroc=_safe_auroc(y, score),
        accuracy=float((pred == y).mean()),
        precision=precision,
        recall=recall,
        f1=f1,
        pixel_auroc=pixel_auroc,
        pro=pro,
        images_per_second=images_per_second,
        latency_ms_mean=1000.0 / images_per_second,
        false_positive_rate=float(pred[good].mean()) if good.any() else float("nan"),
        per_kind=per_kind,
        ci95=bootstrap_ci(y, score, pred),
    )


def _overlay(ax: object, s: ScoredSample, threshold_note: str) -> None:
    img = s.image if s.image.ndim == 2 else cv2.cvtColor(s.image, cv2.COLOR_RGB2GRAY)
    ax.imshow(img, cmap="gray")  # type: ignore[attr-defined]
    ax.imshow(s.anomaly_map, cmap="jet", alpha=0.4)  # type: ignore[attr-defined]
    if s.mask is not None and s.mask.any():
        ax.contour(s.mask, levels=[0.5], colors="white", linewidths=0.8)  # type: ignore[attr-defined]
    ax.set_title(  # type: ignore[attr-defined]
        f"{s.sample.kind}/{s.sample.path.name}\nscore {s.score:.3f} {threshold_note}", fontsize=7
    )
    ax.axis("off")  # type: ignore[attr-defined]


def write_plot(scored: list[ScoredSample], report: EvalReport, path: Path, worst: int = 3) -> None:
    """ROC curve plus the worst-ranked examples (highest good, lowest defect) with overlays."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array([s.sample.label for s in scored])
    score = np.array([s.score for s in scored])
    goods = sorted((s for s in scored if s.sample.label == 0), key=lambda s: -s.score)[:worst]
    bads = sorted((s for s in scored if s.sample.label == 1), key=lambda s: s.score)[:worst]
    examples = goods + bads
    cols = 1 + max(len(examples), 1)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.4))
    axes = np.atleast_1d(axes)
    if 0 < y.sum() < y.size:
        fpr, tpr, _ = roc_curve(y, score)
        axes[0].plot(fpr, tpr)
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.5)
    axes[0].set_title(f"ROC, image AUROC {report.image_auroc:.3f}", fontsize=8)
    axes[0].set_xlabel("FPR")
    axes[0].set_ylabel("TPR")
    for ax, s in zip(axes[1:], examples, strict=False):
        _overlay(ax, s, "(flagged)" if s.anomalous else "(passed)")
    for ax in axes[1 + len(examples) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(
    model: Method,
    category: Path | str,
    json_path: Path | str | None = None,
    png_path: Path | str | None = None,
    batch_size: int = 8,
) -> EvalReport:
    category = Path(category)
    scored, ips = score_category(model, category, batch_size)
    report = compute_report(model, category, scored, ips)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2))
    if png_path is not None:
        write_plot(scored, report, Path(png_path))
    return report
