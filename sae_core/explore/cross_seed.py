"""Lineage's baseline: how much of a layer's dictionary a second SAE of the *same* layer
(another training seed) finds again. Lineage's turnover counts the features of a layer with
a partner of decoder cosine > CLOSE in the next layer; read alone it cannot say whether 40%
is a lot: two seeds of one layer set the ceiling (what "the same feature" reaches when
nothing changed but the SAE's seed). Same measure as lineage (`_carried`: an alive partner
above CLOSE, cosines of the unit decoder rows in bf16), so the two numbers sit side by side."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..sae import Sae
from .lineage import CLOSE, _carried, adjacent

Shares = tuple[float | None, float | None]
"""(share of a's alive features with a close alive partner in b, the same for b in a)."""


def _unit_rows(sae: Sae) -> Tensor:
    """Unit decoder rows (d_sae, d_out) in bf16, as compute_lineage takes them."""
    return F.normalize(sae.W_dec.detach().float(), dim=1).bfloat16()


@torch.inference_mode()
def partner_share(sae_a: Sae, sae_b: Sae, *, alive_a: Tensor | None = None,
                  alive_b: Tensor | None = None, close: float = CLOSE) -> Shares:
    """(share of a's alive features with an alive partner of decoder cosine > `close` in b,
    the same for b in a); every feature alive unless masks (d_sae,) bool say otherwise."""
    rows_a, rows_b = _unit_rows(sae_a), _unit_rows(sae_b)
    if rows_a.shape[1] != rows_b.shape[1]:
        raise ValueError(f"the SAEs decode to different widths ({rows_a.shape[1]}, "
                         f"{rows_b.shape[1]}): not one hookpoint of one model")
    cos_AB = (rows_a @ rows_b.T).float().cpu()  # cpu: as lineage's cosines
    if alive_a is None:
        alive_a = torch.ones(len(rows_a), dtype=torch.bool)  # cpu: as the cosines
    if alive_b is None:
        alive_b = torch.ones(len(rows_b), dtype=torch.bool)  # cpu: as the cosines
    return _carried(cos_AB, alive_a.cpu(), alive_b.cpu(), close)


def cross_seed_shares(saes: dict[str, Sae], other_seed: dict[str, Sae], *,
                      close: float = CLOSE) -> dict[str, float | None]:
    """Per hookpoint both sets hold (in `saes`' order): the share of its features with a
    partner above `close` in the other seed's SAE of the same hookpoint."""
    return {h: partner_share(saes[h], other_seed[h], close=close)[0]
            for h in saes if h in other_seed}


def next_layer_shares(saes: dict[str, Sae], *, close: float = CLOSE
                      ) -> dict[str, float | None]:
    """Per hookpoint with a next layer of its site in `saes` (lineage.adjacent): the share of
    its features with a partner above `close` there; lineage's turnover "up" when every
    feature counts as alive."""
    return {a: partner_share(saes[a], saes[b], close=close)[0]
            for a, b in adjacent(list(saes))}
