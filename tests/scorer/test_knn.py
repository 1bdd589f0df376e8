"""Nearest-neighbour distances to the texture bank (scorer.knn): exact and inverted file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scorer.knn import BankIndex, exact_mean_distance


def _brute(z: torch.Tensor, bank: torch.Tensor, k: int, exclude: torch.Tensor | None):
    d = torch.cdist(z.double(), bank.double())
    if exclude is not None:
        d[:, exclude] = torch.inf
    return d.topk(k, dim=1, largest=False).values.mean(dim=1).float()


def _clustered(n: int, seed: int) -> torch.Tensor:
    """Rows near a 6-dimensional subspace of 18, like texture descriptors (correlated scales)."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(6, 18, generator=torch.Generator().manual_seed(99))
    return torch.randn(n, 6, generator=gen) @ basis + 0.3 * torch.randn(n, 18, generator=gen)


def test_exact_distance_equals_brute_force_with_and_without_left_out_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    z, bank = torch.randn(1500, 18, generator=gen), torch.randn(3000, 18, generator=gen)
    out = torch.rand(3000, generator=gen) < 0.3
    for exclude in (None, out):
        got = exact_mean_distance(z, bank, 3, exclude)
        want = _brute(z, bank, 3, exclude)
        assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    # k larger than what is left: every remaining row
    got = exact_mean_distance(z[:5], bank[:4], 10, torch.tensor([True, False, False, True]))
    want = torch.cdist(z[:5], bank[1:3]).mean(dim=1)
    assert torch.allclose(got, want, atol=1e-4)


def test_inverted_file_is_close_to_exact_and_never_below_it() -> None:
    bank, z = _clustered(8192, 1), _clustered(4000, 2)
    index = BankIndex(bank.numpy(), "ivf", cells=128, probes=8)
    assert index.search == "ivf"
    got = index.mean_distance(z, 3)
    want = _brute(z, bank, 3, None)
    rel = (got - want) / want
    # An unvisited cell can only hide a nearer row: the approximate distance is never smaller.
    assert float(rel.min()) > -1e-4
    assert float(rel.mean()) < 0.01, float(rel.mean())
    assert float((rel.abs() < 1e-4).float().mean()) > 0.9  # most queries find the exact rows


def test_inverted_file_leaves_out_the_excluded_rows() -> None:
    bank = _clustered(4000, 3)
    index = BankIndex(bank.numpy(), "ivf", cells=64, probes=8)
    assert index.search == "ivf"
    exclude = torch.zeros(len(bank), dtype=torch.bool)
    exclude[:1000] = True
    z = bank[:200]  # queries that are bank rows: without exclusion their distance includes 0
    with_self = index.mean_distance(z, 1)
    assert float(with_self.abs().max()) < 1e-3
    without = index.mean_distance(z, 1, exclude)
    assert float(without.min()) > 1e-3  # their own rows are left out
    want = _brute(z, bank, 1, exclude)
    assert float(((without - want) / want).min()) > -1e-4


def test_small_banks_and_wide_probes_are_searched_exactly() -> None:
    bank = torch.randn(500, 18, generator=torch.Generator().manual_seed(4))
    assert BankIndex(bank.numpy(), "ivf", cells=128, probes=8).search == "exact"  # 12 cells
    assert BankIndex(_clustered(8192, 5).numpy(), "ivf", cells=16, probes=8).search == "exact"
    z = torch.randn(50, 18, generator=torch.Generator().manual_seed(6))
    got = BankIndex(bank.numpy(), "ivf").mean_distance(z, 3)
    assert torch.allclose(got, _brute(z, bank, 3, None), atol=1e-4)


def test_bad_settings_are_refused() -> None:
    bank = np.zeros((100, 4), np.float32)
    with pytest.raises(ValueError, match="search must be one of"):
        BankIndex(bank, "hnsw")
    with pytest.raises(ValueError, match="cells and probes"):
        BankIndex(bank, "ivf", cells=0)
