"""Feature-page figures and highlighting."""

import torch

from sae_core.explore.feature_page import token_pieces
from ui.features.view import density_figure, merged_pieces


def test_merged_pieces_carry_the_max_activation(smol_tokenizer):
    from sae_core.explore.feature_page import Snippet

    ids = smol_tokenizer("a 🦜 b", add_special_tokens=False).input_ids
    pieces = token_pieces(smol_tokenizer, ids)
    assert "" in pieces  # the parrot takes several byte-level tokens
    acts = tuple(float(i) for i in range(len(ids)))
    snip = Snippet(tuple(pieces), acts, peak=len(ids) - 2, value=acts[-2], window=0,
                   position=5)
    merged = merged_pieces(snip)
    assert "".join(t for t, _, _ in merged) == "a 🦜 b"
    parrot = next(m for m in merged if "🦜" in m[0])
    last_parrot_token = max(i for i, p in enumerate(pieces) if p == "")
    assert parrot[1] == acts[last_parrot_token]
    assert sum(m[2] for m in merged) == 1


def test_density_figure_shows_dead_features():
    n_fire = torch.tensor([0, 0, 0, 1, 10, 100, 1000])
    fig = density_figure(n_fire, 1000, layer=3, mark=0.1)
    alive, dead = fig.data
    assert dead.y[0] == 3 and sum(alive.y) == 4
    assert max(alive.x) <= 0.125  # density 1 sits in the last bin
