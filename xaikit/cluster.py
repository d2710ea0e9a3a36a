"""Vectorised k-means in torch: seeded k-means++ initialisation and Lloyd iterations on any device.

Used by the ``dino-parts`` segmenter (clustering ViT patch features) and by KLC (per-class
prototypes from CLS features). Everything runs on the device of the input points; the same points
and seed always give the same result on the same device.

Shapes: ``N`` points, ``D`` feature dimension, ``k`` clusters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["KMeans", "kmeans", "nearest", "squared_distances"]


@dataclass(frozen=True, eq=False)
class KMeans:
    """The outcome of :func:`kmeans`.

    Attributes:
        centroids: cluster centres, ``(k, D)``, in the dtype and on the device of the points.
        assignment: index of the nearest centroid of every point, ``(N,)`` ``int64``.
        inertia: sum of squared Euclidean distances of the points to their assigned centroids.
    """

    centroids: torch.Tensor
    assignment: torch.Tensor
    inertia: float

    @property
    def sizes(self) -> torch.Tensor:
        """Number of points in each cluster, ``(k,)`` ``int64``."""
        return torch.bincount(self.assignment, minlength=self.centroids.shape[0])


def squared_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(N, k)`` between points ``(N, D)`` and centroids ``(k, D)``.

    Computed from the differences, not the expanded ``|a|^2 + |b|^2 - 2ab`` form, so a point's
    distance to itself is exactly 0 (k-means++ relies on it).
    """
    return torch.cdist(points, centroids, compute_mode="donot_use_mm_for_euclid_dist").square()


def nearest(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid ``(k, D)`` of every point ``(N, D)``: ``(N,)`` ``int64``.

    Ties go to the lowest centroid index.
    """
    return squared_distances(points, centroids).argmin(dim=1)


def kmeans(
    points: torch.Tensor,
    k: int,
    *,
    iterations: int = 50,
    seed: int = 0,
    tolerance: float = 1e-6,
    init: torch.Tensor | None = None,
) -> KMeans:
    """Cluster ``points`` into ``k`` groups with k-means++ seeding and Lloyd iterations.

    Lloyd iterations stop when the assignment no longer changes, when no centroid moves by more
    than ``tolerance`` times the points' total variance (squared distance, as scikit-learn), or
    after ``iterations`` updates. A cluster left empty by an update is re-seeded at the point
    farthest from its own centroid (several empty clusters take the several farthest points).

    Args:
        points: ``(N, D)`` points; integer points are converted to ``float32``.
        k: number of clusters, ``1 <= k <= N``.
        iterations: most centroid updates (0 keeps the k-means++ centroids).
        seed: seed of the ``torch.Generator`` that drives k-means++.
        tolerance: relative centroid movement below which the iterations stop.
        init: initial centroids ``(k, D)`` instead of k-means++ (``seed`` is then unused).

    Returns:
        A :class:`KMeans` on the device of ``points``; every cluster is non-empty when the points
        are distinct.

    Raises:
        ValueError: when ``points`` is not ``(N, D)``, ``k`` is outside ``[1, N]`` or ``init``
            is not ``(k, D)``.
    """
    if points.ndim != 2:
        raise ValueError(f"kmeans needs points (N, D), got shape {tuple(points.shape)}")
    count = points.shape[0]
    if not 1 <= k <= count:
        raise ValueError(f"kmeans needs 1 <= k <= N (the number of points), got k={k} for N={count} points")
    points = points if points.is_floating_point() else points.float()
    if init is None:
        centroids = kmeans_plus_plus(points, k, torch.Generator(device=points.device).manual_seed(seed))
    elif init.shape != (k, points.shape[1]):
        raise ValueError(f"kmeans init must be (k, D) = ({k}, {points.shape[1]}), got {tuple(init.shape)}")
    else:
        centroids = init.to(points.device, points.dtype)
    threshold = tolerance * points.var(dim=0, unbiased=False).sum()
    assignment = nearest(points, centroids)
    for _ in range(iterations):
        updated = _update(points, assignment, centroids)
        moved = (updated - centroids).square().sum(dim=1).max()
        centroids = updated
        reassigned = nearest(points, centroids)
        converged = bool(torch.equal(reassigned, assignment) or moved <= threshold)
        assignment = reassigned
        if converged:
            break
    inertia = (points - centroids[assignment]).square().sum()
    return KMeans(centroids=centroids, assignment=assignment, inertia=float(inertia))


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur and Vassilvitskii; scikit-learn's greedy variant).

    The first centre is a uniformly drawn point; each next one is the best, by resulting inertia,
    of ``2 + floor(log k)`` candidates drawn with probability proportional to the squared distance
    to the nearest centre chosen so far.

    Args:
        points: ``(N, D)`` floating points.
        k: number of centres, ``1 <= k <= N``.
        generator: seeded generator on the device of ``points``.

    Returns:
        ``(k, D)`` initial centroids, each one of the points.
    """
    trials = 2 + int(math.log(k))
    first = torch.randint(points.shape[0], (1,), generator=generator, device=points.device)
    chosen = [first]
    closest = squared_distances(points, points[first])[:, 0]
    for _ in range(1, k):
        weights = closest if bool(closest.sum() > 0) else torch.ones_like(closest)
        candidates = torch.multinomial(weights, trials, replacement=True, generator=generator)
        # (trials, N): each point's distance to its nearest centre if candidate t were added.
        potential = torch.minimum(closest[None], squared_distances(points[candidates], points))
        best = potential.sum(dim=1).argmin()
        chosen.append(candidates[best : best + 1])
        closest = potential[best]
    return points[torch.cat(chosen)]


def _update(points: torch.Tensor, assignment: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """One Lloyd update: the mean of each cluster's points, ``(k, D)``; empty clusters re-seeded.

    An empty cluster takes the point farthest from its own current centroid; with ``m`` empty
    clusters, the ``m`` farthest points, farthest first to the lowest empty index.
    """
    k = centroids.shape[0]
    sizes = torch.bincount(assignment, minlength=k)
    sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
    updated = sums / sizes.clamp(min=1).unsqueeze(1).to(points.dtype)
    empty = torch.nonzero(sizes == 0).flatten()
    if empty.numel():
        spread = (points - centroids[assignment]).square().sum(dim=1)
        farthest = spread.topk(empty.numel()).indices
        updated[empty] = points[farthest]
    return updated
