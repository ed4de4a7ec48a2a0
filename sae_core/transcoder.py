"""Transcoders: SAEs that read one site and predict another.

A transcoder at block N reads what the MLP reads (`layers.N.mlp_in`, the residual after the
pre-MLP norm) and predicts what the MLP writes (`layers.N.mlp`):

    acts = act_fn(x_in @ W_enc + b_enc)            (TopK, ReLU or JumpReLU, as an SAE)
    y_hat = acts @ W_dec + b_dec (+ x_in @ W_skip.T for a skip transcoder)

It is our `Sae` with `cfg.hookpoint_in` set (config.py, sae.py): keyed, stored, steered
and scored at its output site `cfg.hookpoint`, the way an MLP-output SAE is, but every
encode reads `cfg.reads`. So a view captures both sites (`sites`): the features from the
input, and from the output the token filter (massive activations, with that site's
typical norm), the live view's norms and the quality row's target.

Which tensor the suites read: Gemma Scope (Gemma 2) `blocks.N.ln2.hook_normalized`, Gemma
Scope 2 (Gemma 3) `pre_feedforward_layernorm.output`, EleutherAI sparsify the MLP module's
input: each is the input of block N's MLP module, which `hooks.capture` takes with a forward
pre-hook.
"""

from __future__ import annotations

from torch import Tensor

from .sae import Sae


def mlp_sites(layer: int) -> tuple[str, str]:
    """(what a transcoder of block `layer` reads, what it predicts)."""
    return f"layers.{layer}.mlp_in", f"layers.{layer}.mlp"


def sites(saes: dict[str, Sae]) -> list[str]:
    """Every hookpoint a forward must capture to encode `saes` and check them against their
    output sites: each key, then each transcoder's input, once, in order."""
    out = dict.fromkeys(saes)
    out.update(dict.fromkeys(sae.cfg.hookpoint_in for sae in saes.values()
                             if sae.cfg.is_transcoder))
    return list(out)


def input_of(h: str, sae: Sae, acts: dict[str, Tensor]) -> Tensor:
    """What the SAE keyed `h` encodes from one capture (`acts` from `run_captured(lm, ids,
    sites(saes))`): `acts[h]`, or a transcoder's input; a clear error when it is missing."""
    site = sae.cfg.hookpoint_in or h
    if site not in acts:
        raise KeyError(f"the capture has no {site} for the transcoder at {h}: capture "
                       "transcoder.sites(saes)")
    return acts[site]
