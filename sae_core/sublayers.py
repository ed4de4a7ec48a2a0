"""Where each hookpoint's tensor lives inside one block, across model families (llama,
gemma2/3, qwen2/3, mistral, gpt2, gpt-neox): the module whose output (or, for the input
sites of activations.py, whose input) a hookpoint reads, and the width there.

- `mlp`, `attn`: what the sublayer adds to the residual stream (its post-norm in gemma).
- `mlp_in`: the MLP module's input (after the pre-MLP norm).
- `attn_z`: the input of the attention's output projection (`o_proj` in llama/gemma/qwen,
  `c_proj` in gpt2, `dense` in gpt-neox): every head's output, head-major. In transformers
  5.x each family computes `attn_output.transpose(1, 2)` (batch, seq, heads, head_dim) then
  `reshape(*input_shape, -1)` before the projection (modeling_llama.py, modeling_gemma2.py,
  modeling_gpt2.py), so index h * head_dim + d is head h's dimension d, as TransformerLens's
  `hook_z` (batch, pos, head, d_head) flattened; with grouped-query attention the heads are
  the query heads, as there.
- `resid_mid`: the residual stream between attention and MLP, the input of the norm before
  the MLP (`pre_feedforward_layernorm` in gemma2/3, where `post_attention_layernorm` is the
  attention's post-norm; `ln_2` in gpt2; `post_attention_layernorm` in llama, qwen, mistral,
  gpt-neox). gpt-neox with a parallel residual has none.
"""

from __future__ import annotations

from torch import Tensor, nn

SUBLAYER_NAMES = {"mlp": ("mlp", "feed_forward", "ffn"),
                  "attn": ("self_attn", "attn", "attention", "self_attention")}
"""What the MLP and attention of a block are called across families (llama, gpt2,
gpt-neox, ...)."""
OUT_PROJ_NAMES = ("o_proj", "c_proj", "dense", "out_proj")
"""The attention's output projection (llama/gemma/qwen, gpt2, gpt-neox, others)."""
PRE_MLP_NORMS = ("pre_feedforward_layernorm", "ln_2", "post_attention_layernorm")
"""The norm before the MLP, in this order: gemma's name first, since there
`post_attention_layernorm` is the attention's post-norm."""
POST_NORMS = {"mlp": "post_feedforward_layernorm", "attn": "post_attention_layernorm"}
"""Blocks with a norm after the MLP and after attention (gemma2, gemma3, olmo2) add these
norms' outputs to the residual stream. There `post_attention_layernorm` normalises the
attention output; in llama, qwen and gpt-neox the same name is the norm *before* the MLP."""


def find_sublayer(block: nn.Module, sub: str) -> nn.Module:
    """The block's MLP (`mlp`) or attention (`attn`) module itself."""
    for name in SUBLAYER_NAMES[sub]:
        if isinstance(getattr(block, name, None), nn.Module):
            return getattr(block, name)
    raise ValueError(f"no {sub} submodule in {type(block).__name__}")


def sublayer_output(block: nn.Module, sub: str) -> nn.Module:
    """The module whose output is what the block's MLP (`mlp`) or attention (`attn`) adds to
    the residual stream: the sublayer itself, or its post-norm in blocks that have one (as
    TransformerLens's `hook_mlp_out` and Gemma Scope 2's `mlp_out`, which reads
    `post_feedforward_layernorm.output`)."""
    if isinstance(getattr(block, POST_NORMS["mlp"], None), nn.Module):
        return getattr(block, POST_NORMS[sub])
    return find_sublayer(block, sub)


def attn_out_proj(block: nn.Module) -> nn.Module:
    """The attention's output projection, whose input is `attn_z`."""
    attn = find_sublayer(block, "attn")
    for name in OUT_PROJ_NAMES:
        if isinstance(getattr(attn, name, None), nn.Module):
            return getattr(attn, name)
    raise ValueError(f"no output projection ({', '.join(OUT_PROJ_NAMES)}) in "
                     f"{type(attn).__name__}")


def pre_mlp_norm(block: nn.Module, config: object) -> nn.Module:
    """The norm before the MLP, whose input is `resid_mid`."""
    if getattr(config, "use_parallel_residual", False) or getattr(config, "parallel_attn", False):
        raise ValueError(f"{type(block).__name__} runs attention and MLP in parallel: there is "
                         "no residual stream between them (resid_mid)")
    for name in PRE_MLP_NORMS:
        if isinstance(getattr(block, name, None), nn.Module):
            return getattr(block, name)
    raise ValueError(f"no norm before the MLP ({', '.join(PRE_MLP_NORMS)}) in "
                     f"{type(block).__name__}")


def site_module(block: nn.Module, sub: str, config: object) -> nn.Module:
    """The module of `block` that sublayer `sub` (activations.parse_hookpoint) reads: the one
    whose output it is, or for an input site (`mlp_in`, `attn_z`, `resid_mid`) whose input."""
    if sub == "mlp_in":
        return find_sublayer(block, "mlp")
    if sub == "attn_z":
        return attn_out_proj(block)
    if sub == "resid_mid":
        return pre_mlp_norm(block, config)
    return sublayer_output(block, sub)


def in_width(module: nn.Module) -> int:
    """Width of a projection's input: nn.Linear (out, in), or gpt2's Conv1D (in, out)."""
    if isinstance(module, nn.Linear):
        return module.in_features
    return int(module.weight.shape[0])


def through_projection(module: nn.Module, directions_ND: Tensor) -> Tensor:
    """(n, d_model) what the projection adds to its output for inputs `directions_ND`
    (linear: no bias), e.g. an `attn_z` decoder row as a direction in the residual stream."""
    w = module.weight.to(directions_ND.device, directions_ND.dtype)
    return directions_ND @ (w.T if isinstance(module, nn.Linear) else w)
