"""`topk_best_first`: the entries the one top-k rule chooses, best first; its ground truth
is a stable descending sort of the whole row (ties in ascending index order)."""

import pytest
import torch

from sae_core.topk import topk_best_first, topk_sorted


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 5, 17])
def test_best_first_is_the_head_of_a_stable_descending_sort(dtype, k):
    gen = torch.Generator().manual_seed(k)
    x = torch.randint(-3, 4, (40, 64), generator=gen).to(dtype)  # heavy ties
    vals, idx = topk_best_first(x, k)
    ref_vals, ref_idx = x.sort(dim=1, descending=True, stable=True)
    assert torch.equal(vals, ref_vals[:, :k]) and torch.equal(idx, ref_idx[:, :k])
    _, chosen = topk_sorted(x, k)  # the same set as the rule's ascending listing
    assert torch.equal(idx.sort(dim=1).values, chosen)
