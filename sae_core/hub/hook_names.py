"""Where each public SAE suite's SAEs read, in its own names, mapped onto our hookpoints
(activations.py). TransformerLens and module hook names map in sae_core/saelens.py, the one
map both ways (SAE configs are read and written there); `hook_of` here is that map with
HubError. This module adds the suites' folder names and HF module names (convert.hookpoint_of,
releases.py, suites.py and transcoders.py call these).

Our `layers.N.mlp` / `layers.N.attn` are what the MLP / attention adds to the residual stream:
in gemma2 and gemma3 blocks that is the output of the norm after the sublayer
(lm.sublayer_output), as TransformerLens's `hook_mlp_out` and Gemma Scope's `mlp_out` read.

- Gemma Scope 2 (Gemma 3): `{resid_post,mlp_out,attn_out,transcoder}[_all]/layer_L_width_W_l0_S
  [_affine]`; its config.json's `hf_hook_point_in`/`_out` name HF modules (`hf_hookpoint`).
- Gemma Scope (Gemma 2): the site is the repo's suffix (`google/gemma-scope-2b-pt-res`, `-mlp`,
  `-att`, `-transcoders`), the path holds the layer (`layer_L/width_16k/average_l0_71`).
- Llama Scope (Llama 3.1 8B): `Llama3_1-8B-Base-L{L}{R,A,M}-{8,32}x` (residual after block L,
  attention output, MLP output); R1-Distill: `<run>/L{L}R`.
- Qwen Scope (Qwen 3, 3.5): `layer{L}.sae.pt`, the residual after block L (`model.layers.L`).

Attention SAEs of both Gemma Scopes read the attention's `o_proj` input (`attn.hook_z`):
layers.N.attn_z. Refused with the reason: token-embedding SAEs (`embedding/`, `hook_embed`,
`blocks.0.hook_resid_pre`); cross-layer transcoders (`clt/`).
"""

from __future__ import annotations

import re

from .. import saelens
from ..saelens import EMBED, SuiteHook, mlp_transcoder
from .fetch import HubError


def hook_of(hook: str, hook_out: str = "") -> SuiteHook:
    """Where an SAE with TransformerLens or module hook `hook` reads; for a transcoder
    (`hook_out`, SAELens's `hook_name_out`, or a hook that names the MLP's input) what it
    reads and predicts (saelens.hook_of). HubError with the reason when that has no
    hookpoint here."""
    try:
        return saelens.hook_of(hook, hook_out)
    except ValueError as err:
        raise HubError(str(err)) from err


GEMMA_SCOPE_2_RE = re.compile(
    r"^(resid_post|mlp_out|attn_out|transcoder|clt)(?:_all)?/layer_(\d+)_width_\w+$")
GEMMA_SCOPE_RE = re.compile(
    r"^(?:layer_(\d+)|embedding)/width_\w+/(?:average_l0_\d+|canonical)$")
LLAMA_SCOPE_RE = re.compile(r"(?:^|[/-])L(\d+)([RAM])(?:-\d+x)?$")
QWEN_SCOPE_RE = re.compile(r"^layer(\d+)\.sae\.pt$")


def gemma_scope_2_hook(path: str) -> SuiteHook:
    """A Gemma Scope 2 folder, e.g. `resid_post_all/layer_5_width_16k_l0_big`."""
    m = GEMMA_SCOPE_2_RE.match(path.strip("/"))
    if not m:
        raise HubError(f"{path!r} is no Gemma Scope 2 folder (site/layer_L_width_W_l0_S)")
    site, layer = m.group(1), int(m.group(2))
    if site == "attn_out":
        return SuiteHook(f"layers.{layer}.attn_z")
    if site == "clt":
        raise HubError(f"Gemma Scope 2 {path}: cross-layer transcoders are not supported")
    if site == "transcoder":
        return mlp_transcoder(layer)
    return SuiteHook(f"layers.{layer}" + (".mlp" if site == "mlp_out" else ""))


def gemma_scope_hook(repo_id: str, path: str) -> SuiteHook:
    """A Gemma Scope (Gemma 2) SAE: the site from the repo, the layer from the path."""
    site = repo_id.rsplit("-", 1)[-1]
    m = GEMMA_SCOPE_RE.match(path.strip("/"))
    if site not in ("res", "mlp", "att", "transcoders") or not m:
        raise HubError(f"{repo_id} {path!r} is no Gemma Scope SAE (google/gemma-scope-<model>-"
                       "{res,mlp,att,transcoders}, layer_L/width_W/average_l0_X)")
    if m.group(1) is None:
        raise HubError(f"Gemma Scope {path}: it {EMBED}")
    layer = int(m.group(1))
    if site == "att":
        return SuiteHook(f"layers.{layer}.attn_z")
    if site == "transcoders":
        return mlp_transcoder(layer)
    return SuiteHook(f"layers.{layer}" + (".mlp" if site == "mlp" else ""))


def llama_scope_hook(path: str) -> SuiteHook:
    """A Llama Scope folder: `Llama3_1-8B-Base-L15M-8x`, or R1-Distill's `<run>/L15R`."""
    m = LLAMA_SCOPE_RE.search(path.strip("/"))
    if not m:
        raise HubError(f"{path!r} is no Llama Scope SAE (L<layer><R|A|M>)")
    return SuiteHook(f"layers.{m.group(1)}" + {"R": "", "A": ".attn", "M": ".mlp"}[m.group(2)])


def qwen_scope_hook(path: str) -> SuiteHook:
    """A Qwen Scope file, `layer12.sae.pt`: the residual stream after block 12."""
    m = QWEN_SCOPE_RE.match(path.strip("/").rsplit("/", 1)[-1])
    if not m:
        raise HubError(f"{path!r} is no Qwen Scope SAE (layer<L>.sae.pt)")
    return SuiteHook(f"layers.{m.group(1)}")


HF_SITES = {"": "", "output": "", "mlp": ".mlp", "mlp.output": ".mlp",
            "post_feedforward_layernorm.output": ".mlp", "self_attn": ".attn",
            "self_attn.output": ".attn", "mlp.input": ".mlp_in",
            "pre_feedforward_layernorm.output": ".mlp_in", "self_attn.o_proj.input": ".attn_z",
            "pre_feedforward_layernorm.input": ".resid_mid"}
"""HF module names (after `model.layers.N.`) and our sublayer. In gemma blocks `mlp.output`
comes before the post-norm that our `.mlp` reads; the Gemma suites name that norm."""


def hf_hookpoint(name: str) -> str:
    """Our hookpoint for an HF module name with `.input`/`.output`, as Gemma Scope 2's
    config.json (`hf_hook_point_in`) and SAELens's `hf_hook_name` write it:
    `model.layers.5.output` -> layers.5, `....post_feedforward_layernorm.output` ->
    layers.5.mlp, `....pre_feedforward_layernorm.output` -> layers.5.mlp_in."""
    parts = name.removeprefix("model.").split(".") if isinstance(name, str) else []
    rest = ".".join(parts[2:])
    if len(parts) >= 2 and parts[0] == "layers" and parts[1].isdigit() and rest in HF_SITES:
        return f"layers.{int(parts[1])}{HF_SITES[rest]}"
    raise HubError(f"HF hook {name!r} has no hookpoint here (supported: model.layers.N[.output], "
                   "its mlp / post_feedforward_layernorm output, self_attn output, "
                   "pre_feedforward_layernorm output or input, mlp input, o_proj input)")


def suite_hook(repo_id: str, path: str) -> SuiteHook:
    """Where the SAE at `path` of the suite repo `repo_id` reads; HubError with the reason
    when it has no hookpoint here or the repo is no suite known here."""
    if repo_id.startswith("google/gemma-scope-2-"):
        return gemma_scope_2_hook(path)
    if repo_id.startswith("google/gemma-scope-"):
        return gemma_scope_hook(repo_id, path)
    if repo_id.startswith(("fnlp/Llama3_1-", "fnlp/Llama-Scope")):
        return llama_scope_hook(path)
    if repo_id.startswith("Qwen/SAE-Res-"):
        return qwen_scope_hook(path)
    raise HubError(f"{repo_id} is none of the suites named here (Gemma Scope 1 and 2, Llama "
                   "Scope, Qwen Scope)")
