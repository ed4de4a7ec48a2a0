"""SAELens's `cfg.json` and the hook names it uses: the one reader of a SAELens config (v6
with nested `metadata`, pre-6.0 flat, and the transcoders we write), its writer, and the
one map between our hookpoints (activations.py) and hook names, both ways.

Low in the house: `sae.Sae` saves and loads through it, and the Hub converters
(hub/formats.py, hub/convert.py) read Hub folders through it; hub/hook_names.py adds the
public suites' folder names and HF module names, and raises HubError where this module
raises ValueError.

Hook names:
- TransformerLens (SAELens's `hook_name`, the release table's hooks): `hook_resid_post`
  <-> layers.N, `hook_resid_pre` -> layers.{N-1}, `hook_mlp_out` <-> layers.N.mlp,
  `hook_attn_out` <-> layers.N.attn, `attn.hook_z` <-> layers.N.attn_z (o_proj's input,
  heads x head_dim), `hook_resid_mid` <-> layers.N.resid_mid. What a block's MLP reads
  (`hook_mlp_in`; `ln2.hook_normalized` in Gemma Scope; `mlp.hook_in` in mwhanna's) is a
  transcoder's input, layers.N.mlp_in, predicting layers.N.mlp; we write `hook_mlp_in`.
- Module names (sparsify; a Hub caller's hook): `layers.N`, `layers.N.mlp`,
  `layers.N.self_attn` (with or without `model.` / `transformer.` / `gpt_neox.`; `h.N` for
  gpt2) -> layers.N, layers.N.mlp, layers.N.attn.
Refused with the reason: token-embedding hooks (`hook_embed`, `blocks.0.hook_resid_pre`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .activations import parse_hookpoint
from .config import SaeConfig

DEFAULT_K = 32
"""k of a config that names none (a ReLU or JumpReLU SAE's `encode_topk`)."""
TL_HOOKS = {"": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out",
            "mlp_in": "hook_mlp_in", "attn_z": "attn.hook_z", "resid_mid": "hook_resid_mid"}
"""Our sublayer (activations.parse_hookpoint) -> its TransformerLens hook in block N."""
TL_MLP_INPUTS = ("hook_mlp_in", "mlp.hook_in", "ln2.hook_normalized")
"""What a block's MLP reads, in the transcoder suites' TransformerLens names."""
TL_SITES = {tl: sub for sub, tl in TL_HOOKS.items() if tl not in TL_MLP_INPUTS}
"""TransformerLens hook -> our sublayer, for what an SAE reads (TL_HOOKS reversed)."""
TL_RE = re.compile(r"^blocks\.(\d+)\.([\w.]+)$")
MODULE_RE = re.compile(r"^(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)"
                       r"(?:\.(mlp|self_attn|attn|attention))?$")
EMBED = "reads the token embeddings, which have no hookpoint here"
SUPPORTED_HOOKS = ("blocks.N.hook_resid_post, blocks.N.hook_resid_pre (N >= 1), "
                   "blocks.N.hook_resid_mid, blocks.N.hook_mlp_out, blocks.N.hook_attn_out, "
                   "blocks.N.attn.hook_z; a transcoder's blocks.N.hook_mlp_in / mlp.hook_in / "
                   "ln2.hook_normalized to blocks.N.hook_mlp_out (SAELens); layers.N, "
                   "layers.N.mlp, layers.N.self_attn (sparsify)")


class SuiteHook(NamedTuple):
    """Where an SAE sits, as SaeConfig names it."""

    hookpoint: str
    """What an SAE reads, or what a transcoder predicts (`layers.L.mlp`)."""
    hookpoint_in: str = ""
    """A transcoder's input (`layers.L.mlp_in`); "" for an SAE."""


def mlp_transcoder(layer: int) -> SuiteHook:
    """A transcoder from block `layer`'s MLP input to its output."""
    return SuiteHook(f"layers.{layer}.mlp", f"layers.{layer}.mlp_in")


def tl_hook(hookpoint: str) -> str:
    """TransformerLens name of our hookpoint; one we do not name is kept as it is."""
    try:
        layer, sub = parse_hookpoint(hookpoint)
    except ValueError:
        return hookpoint
    return f"blocks.{layer}.{TL_HOOKS[sub]}"


def is_hook_name(name: str) -> bool:
    """Whether `name` is a hook name (TransformerLens or module), not a folder or SAE id."""
    return bool(TL_RE.match(name) or MODULE_RE.match(name) or name == "hook_embed")


def _tl_site(layer: int, site: str, hook: str) -> SuiteHook:
    if site == "hook_resid_pre":
        if layer == 0:
            raise ValueError(f"{hook} {EMBED} (supported: {SUPPORTED_HOOKS})")
        return SuiteHook(f"layers.{layer - 1}")
    if site in TL_MLP_INPUTS:
        return mlp_transcoder(layer)
    if site in TL_SITES:
        return SuiteHook(f"layers.{layer}" + (f".{TL_SITES[site]}" if TL_SITES[site] else ""))
    raise ValueError(f"hook {hook!r} has no hookpoint here (supported: {SUPPORTED_HOOKS})")


def hook_of(hook: str, hook_out: str = "") -> SuiteHook:
    """Where an SAE with TransformerLens or module hook `hook` reads; for a transcoder
    (`hook_out`, SAELens's `hook_name_out`, or a hook that names the MLP's input) what it
    reads and predicts. ValueError with the reason when that has no hookpoint here."""
    if hook == "hook_embed":
        raise ValueError(f"{hook} {EMBED} (supported: {SUPPORTED_HOOKS})")
    if m := MODULE_RE.match(hook or ""):
        sub = m.group(2)
        return SuiteHook(f"layers.{m.group(1)}" + ("" if not sub else ".mlp" if sub == "mlp"
                                                   else ".attn"))
    if not (m := TL_RE.match(hook or "")):
        raise ValueError(f"hook {hook!r} has no hookpoint here (supported: {SUPPORTED_HOOKS})")
    found = _tl_site(int(m.group(1)), m.group(2), hook)
    if hook_out and (not found.hookpoint_in or hook_out != f"blocks.{m.group(1)}.hook_mlp_out"):
        raise ValueError(f"a transcoder from {hook} to {hook_out} is not supported (only from "
                         "a block's MLP input to its own MLP output)")
    return found


def sae_hookpoint(hook: str) -> str:
    """Our hookpoint for an SAE's hook name (`hook_of`); a transcoder's input is refused."""
    found = hook_of(hook)
    if found.hookpoint_in:
        raise ValueError(f"{hook} is what a transcoder reads (the MLP's input, predicting "
                         f"{found.hookpoint}): load it as a transcoder")
    return found.hookpoint


def input_normalization(raw: dict) -> str:
    """"none", or "expected_average_only_in" (inputs scaled by one constant): the
    config's `normalize_activations` (pre-6.0: a bool); ValueError for any other."""
    norm = raw.get("normalize_activations") or "none"
    norm = {True: "expected_average_only_in", False: "none"}.get(norm, norm)
    if norm not in ("none", "expected_average_only_in"):
        raise ValueError(f"normalize_activations={norm!r} is not supported")
    return norm


def _architecture(raw: dict) -> tuple[str, bool]:
    """(our architecture, whether a transcoder) of a config; ValueError if unsupported.
    SAELens names: standard (ReLU), topk, jumprelu; pre-6.0 TopK is `standard` with
    activation `topk`; transcoders ours and SAELens's: [topk_|jumprelu_][skip_]transcoder."""
    name = given = raw.get("architecture") or "standard"
    act = raw.get("activation_fn") or raw.get("activation_fn_str") or "relu"
    transcoder = name.endswith("transcoder")
    base = name.removesuffix("transcoder").removesuffix("_").removesuffix("skip").strip("_")
    if transcoder:
        name = base or "standard"
    elif name == "standard" and act == "topk":  # pre-6.0 TopK
        name = "topk"
    ours = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(name)
    if ours is None or (ours == "relu" and act != "relu" and not transcoder):
        raise ValueError(f"unsupported architecture {given!r} (activation {act!r}); "
                         "supported: standard (ReLU), topk, jumprelu")
    return ours, transcoder


def sae_config_from_saelens(raw: dict, *, hook: str = "", model_name: str = "") -> SaeConfig:
    """Our SaeConfig of a SAELens cfg.json; `hook` and `model_name` stand in for what the
    config does not name. ValueError saying why for what we cannot read the same way (other
    architectures, per-head SAEs, decoder-norm rescaling, other input normalisations); a
    missing `d_in` / `d_sae` is a KeyError. Our own fields (`sae_atlas_hookpoint`, ...) in
    `metadata` come first; TypeError for a config that is no JSON object."""
    if not isinstance(raw, dict):
        raise TypeError(f"a SAELens config is a JSON object, got {type(raw).__name__}")
    arch, transcoder = _architecture(raw)
    meta = raw.get("metadata") or {}
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k") or meta.get("k")
    if arch == "topk" and not k:
        raise ValueError("a topk SAE without k")
    head = meta.get("hook_head_index",
                    raw.get("hook_head_index", raw.get("hook_point_head_index")))
    if raw.get("rescale_acts_by_decoder_norm") or head is not None:
        raise ValueError("rescale_acts_by_decoder_norm / per-head SAEs are not supported")
    input_normalization(raw)
    hook = meta.get("hook_name") or raw.get("hook_name") or raw.get("hook_point") or hook
    common = {"d_in": int(raw["d_in"]), "d_sae": int(raw["d_sae"]), "architecture": arch,
              "k": int(k or DEFAULT_K),
              "model_name": meta.get("model_name") or raw.get("model_name") or model_name}
    if not transcoder:
        return SaeConfig(**common, hookpoint=meta.get("sae_atlas_hookpoint")
                         or sae_hookpoint(hook),
                         apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)))
    sites = None
    if not (meta.get("sae_atlas_hookpoint") and meta.get("sae_atlas_hookpoint_in")):
        sites = hook_of(hook, meta.get("hook_name_out", ""))
    return SaeConfig(**common, hookpoint=meta.get("sae_atlas_hookpoint") or sites.hookpoint,
                     hookpoint_in=meta.get("sae_atlas_hookpoint_in") or sites.hookpoint_in,
                     d_out=int(raw.get("d_out", raw["d_in"])), skip="skip_" in raw["architecture"],
                     apply_b_dec_to_input=False)  # a transcoder's b_dec is an output bias


def saelens_cfg(cfg: SaeConfig) -> dict:
    """SAELens v6 config; our own fields go under `metadata`. A transcoder is written as
    SAELens's (jumprelu_)(skip_)transcoder with `d_out` and `hook_name_out`; a TopK one as
    topk_(skip_)transcoder, which only we read."""
    arch = {"topk": "topk", "relu": "standard"}.get(cfg.architecture, cfg.architecture)
    if cfg.is_transcoder:
        arch = {"standard": ""}.get(arch, arch + "_") + ("skip_" if cfg.skip else "") + \
            "transcoder"
    out = {
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "architecture": arch,
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "dtype": "float32",
        "device": "cpu",
        "metadata": {
            "model_name": cfg.model_name,
            "hook_name": tl_hook(cfg.reads),
            "sae_atlas_hookpoint": cfg.hookpoint,
            "k": cfg.k,
        },
    }
    if cfg.architecture == "topk":
        out["k"] = cfg.k
    if cfg.is_transcoder:
        out["d_out"] = cfg.width_out
        out["metadata"] |= {"hook_name_out": tl_hook(cfg.hookpoint),
                            "sae_atlas_hookpoint_in": cfg.hookpoint_in}
    return out
