"""k-means: exact answers on separated blobs, determinism, degenerate k, empty clusters, refusals."""

from __future__ import annotations

import pytest
import torch

from xaikit.cluster import KMeans, kmeans, nearest


def blobs(per_blob: int = 25, dim: int = 8, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Four tight blobs far apart: points ``(4 * per_blob, dim)`` and their blob index ``(4 * per_blob,)``."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, dim) * 20
    offsets = 0.3 * torch.randn(4, per_blob, dim, generator=generator)
    points = (centres[:, None] + offsets).reshape(-1, dim)
    order = torch.randperm(points.shape[0], generator=generator)  # interleave the blobs
    return points[order], torch.arange(4).repeat_interleave(per_blob)[order]


def test_separated_blobs_are_recovered_exactly():
    points, truth = blobs()
    result = kmeans(points, 4)
    assert isinstance(result, KMeans)
    assert result.assignment.dtype == torch.int64 and result.assignment.shape == truth.shape
    # the same partition up to renaming: one cluster per blob, one blob per cluster
    pairs = torch.unique(torch.stack([truth, result.assignment]), dim=1)
    assert pairs.shape[1] == 4 and pairs[0].unique().numel() == 4 and pairs[1].unique().numel() == 4
    expected = torch.stack([points[truth == blob].mean(dim=0) for blob in pairs[0]])
    torch.testing.assert_close(result.centroids[pairs[1]], expected)
    within = sum(float((points[truth == blob] - points[truth == blob].mean(dim=0)).square().sum()) for blob in range(4))
    assert result.inertia == pytest.approx(within, rel=1e-5)
    assert result.sizes.tolist() == [25, 25, 25, 25]


def test_same_input_and_seed_give_identical_results():
    points = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
    first, second = kmeans(points, 6, seed=7), kmeans(points, 6, seed=7)
    assert torch.equal(first.centroids, second.centroids)
    assert torch.equal(first.assignment, second.assignment)
    assert first.inertia == second.inertia


def test_k_equal_to_n_puts_every_point_in_its_own_cluster():
    points = torch.randn(9, 3, generator=torch.Generator().manual_seed(1))
    result = kmeans(points, 9)
    assert sorted(result.assignment.tolist()) == list(range(9))
    assert result.inertia == 0.0
    torch.testing.assert_close(result.centroids[result.assignment], points)


def test_one_cluster_is_the_mean_and_integer_points_become_float():
    points = torch.tensor([[0, 0], [2, 0], [0, 4], [2, 4]])
    result = kmeans(points, 1)
    torch.testing.assert_close(result.centroids, torch.tensor([[1.0, 2.0]]))
    assert result.assignment.tolist() == [0, 0, 0, 0]
    assert result.inertia == pytest.approx(4 * 5.0)


def test_empty_clusters_are_reseeded_at_the_farthest_points():
    points = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    # clusters 1 and 2 start far away and win no point: they move to 0 and 3, farthest from cluster 0
    result = kmeans(points, 3, init=torch.tensor([[1.5], [100.0], [-100.0]]))
    assert sorted(result.sizes.tolist()) == [1, 1, 2]
    assert sorted(result.centroids.flatten().tolist()) == [0.0, 1.5, 3.0]
    assert result.assignment[1] == result.assignment[2]
    assert result.inertia == pytest.approx(0.5)


def test_zero_iterations_keep_the_kmeans_plus_plus_seeds():
    points, _ = blobs(per_blob=5)
    result = kmeans(points, 4, iterations=0)
    # seeds are data points, one per blob (k-means++ draws far from the seeds chosen so far)
    assert (torch.cdist(result.centroids, points).amin(dim=1) == 0).all()
    assert result.sizes.tolist() == [5, 5, 5, 5]


def test_nearest_picks_the_closest_centroid_and_the_lowest_on_ties():
    centroids = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    points = torch.tensor([[1.0, 1.0], [9.0, -1.0], [5.0, 0.0]])
    assert nearest(points, centroids).tolist() == [0, 1, 0]


@pytest.mark.parametrize("k", [0, -1, 6])
def test_bad_k_is_refused(k):
    with pytest.raises(ValueError, match=rf"1 <= k <= N .*k={k} for N=5 points"):
        kmeans(torch.zeros(5, 2), k)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"points \(N, D\)"):
        kmeans(torch.zeros(2, 3, 4), 1)
    with pytest.raises(ValueError, match=r"init must be \(k, D\) = \(2, 3\)"):
        kmeans(torch.zeros(5, 3), 2, init=torch.zeros(3, 3))
