"""Named API endpoints (API docs, `gradio_client`, and MCP tools with `mcp_server=True`).

Every caller is a stranger: the SAE set is named among the listed ones (never a path to
open), text and generation lengths are bounded, and bad input is a `gr.Error` that says what
is allowed. The docstrings below become the API docs and MCP tool descriptions. No
`from __future__ import annotations` here: Gradio reads the type hints as real types.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr
from gradio.context import get_blocks_context

from sae_core.activations import layer_of
from sae_core.atlas.layout import LoadedAtlas, read_info
from sae_core.errors import check_number, check_whole
from sae_core.explore.feature_index import has_feature_index
from sae_core.explore.feature_page import feature_page as read_page
from sae_core.explore.layermap import read_layer_map
from sae_core.explore.live import live_view
from sae_core.explore.names import label_of, readable_names
from sae_core.steer.edits import FeatureSteer, Steering
from sae_core.steer.finder import find_steering
from sae_core.steer.generation import MAX_PROMPT_CHARS, GenConfig, side_by_side

from .layer_map.tab import MIN_LIFT, MIN_SUPPORT, THRESHOLD
from .layer_map.view import KIND_NAMES, TASK_NAMES, present_labels
from .saes.release_list import list_releases
from .serving import session
from .serving.errors import friendly
from .shared.names_view import name_json
from .shared.sites import hookpoint_at, site_label
from .steering.inputs import MAX_FEATURE, MAX_LAYER, steering_strength

MAX_TEXT_CHARS = 2000
"""Longest text or concept accepted (a prompt: the library's MAX_PROMPT_CHARS)."""
MAX_TEXT_TOKENS = 64
"""Tokens of a text read by features_on_text (longer text is cut, with a notice)."""
MAX_API_NEW_TOKENS = 100  # most tokens steer_text writes (each of two rows)
MAX_TOP = 8
API_CONCURRENCY = 2
"""Model runs (features_on_text, steer_text) from the API at once (2 cores); more wait in the
queue. Reads of files (the other endpoints) run up to 4 at once, apart from them."""
ENDPOINTS = ("list_atlases", "feature_page", "features_on_text", "steer_text", "find_steering",
             "layer_map", "list_releases")
MODEL_RUNS = ("features_on_text", "steer_text", "find_steering")
MAX_CANDIDATES = 12  # candidates find_steering lists (best first)


def _text(value, name: str, *, empty_ok: bool = False, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str) or not (empty_ok or value.strip()):
        raise gr.Error(f"{name} must be a {'' if empty_ok else 'non-empty '}string")
    if len(value) > max_chars:
        raise gr.Error(f"{name} is {len(value):,} characters long; the limit is "
                       f"{max_chars:,}")
    return value


class AtlasApi:
    """The endpoints, over the SAE sets `atlases()` lists; `default` is used when a caller
    names none."""

    list_releases = staticmethod(list_releases)  # the Hub's releases (ui/saes/release_list.py)

    def __init__(self, atlases: Callable[[], Sequence[str]], default: str | None = None):
        self._atlases, self._default = atlases, default

    def folder(self, atlas: str) -> str:
        """The listed folder that `atlas` names (as listed, or its folder's name)."""
        listed = list(self._atlases())
        name = (atlas or "").strip() if isinstance(atlas, str) else None
        if name == "" and self._default in listed:
            return self._default
        hits = [f for f in listed if name in (f, Path(f).name)]
        if len(hits) != 1:
            names = ", ".join(Path(f).name for f in listed) or "none"
            shown = repr(name[:40]) if isinstance(name, str) else "that value"
            raise gr.Error(f"Unknown SAE set {shown}: name one of {names} (list_atlases).")
        return hits[0]

    def _open(self, atlas: str) -> tuple[str, LoadedAtlas]:
        folder = self.folder(atlas)
        try:
            return Path(folder).name, session.open_atlas(folder)
        except (OSError, ValueError) as err:
            raise gr.Error(f"Could not open the SAE set {Path(folder).name}: {err}") from err

    def _hookpoint(self, loaded: LoadedAtlas, layer) -> str:  # ValueError: a message (@friendly)
        layer = layer if isinstance(layer, str) else check_whole(layer, "layer", 0, MAX_LAYER)
        return hookpoint_at(list(loaded.saes), layer)  # a number: residual first (ui/shared/sites)

    @friendly("listing the SAE sets")
    def list_atlases(self) -> list[dict]:
        """The SAE sets this app serves: pass one's name as `atlas` to the other tools.

        Returns:
            one entry per SAE set: name, model, layers, each SAE's hookpoint and layer key
        """
        out = []
        for folder in self._atlases():
            hooks = (info := read_info(folder)).hookpoints
            out.append({"name": Path(folder).name, "model": info.model,
                        "layers": sorted({layer_of(h) for h in hooks}),
                        "saes": [{"hookpoint": h, "layer": site_label(h)} for h in hooks]})
        return out

    @friendly("reading the feature page")
    def feature_page(self, atlas: str, layer: int | str, feature: int) -> dict:
        """One SAE feature's page: its name and label, how often it fires, the output tokens its
        direction promotes and suppresses (logit lens), and its top-activating snippets.

        Args:
            atlas: SAE set name from list_atlases ("" for the app's default)
            layer: layer number (its residual SAE first) or a key like "3 (MLP out)" (list_atlases)
            feature: feature number within that layer's SAE
        Returns:
            the page as JSON
        """
        name, loaded = self._open(atlas)
        h = self._hookpoint(loaded, layer)
        if not has_feature_index(Path(loaded.folder)):
            raise gr.Error(f"The SAE set {name} has no feature index yet.")
        d_sae = loaded.saes[h].cfg.d_sae
        f = check_whole(feature, "feature", 0, d_sae - 1, from_text=True)
        page = read_page(loaded, h, f)
        return {
            "atlas": name, "layer": layer_of(h), "hookpoint": h, "feature": page.feature,
            "features_in_layer": page.d_sae, "density": page.density,
            "firings": page.n_fire, "tokens_indexed": page.n_tokens,
            "max_activation": page.max_act, "name": name_json(readable_names(loaded.folder), h, f),
            "labels": [{"task": TASK_NAMES.get(lab.task, lab.task), "label": lab.label,
                        "consistency": lab.consistency, "support": lab.support,
                        "lift": lab.lift} for lab in page.labels],
            "promotes": [{"token": t, "score": v} for t, v in page.promoted],
            "suppresses": [{"token": t, "score": v} for t, v in page.suppressed],
            "top_snippets": [{"text": "".join(s.pieces), "peak_token": s.pieces[s.peak],
                              "activation": s.value} for s in page.top],
        }

    @friendly("reading the text")
    def features_on_text(self, atlas: str, text: str, top: int = 3) -> dict:
        """The strongest SAE features on each token of a text, at every layer of the set.

        Args:
            atlas: SAE set name from list_atlases ("" for the app's default)
            text: the text to read (up to 2000 characters; the first 64 tokens are read)
            top: features kept per token and layer (1 to 8)
        Returns:
            per token, per layer, the top features with their activations
        """
        name, loaded = self._open(atlas)
        k = check_whole(top, "top", 1, MAX_TOP, from_text=True)
        view = live_view(loaded, _text(text, "text"), max_tokens=MAX_TEXT_TOKENS, top=k)
        layers, names = [layer_of(h) for h in view.hookpoints], readable_names(loaded.folder)
        tokens = []
        for t, piece in enumerate(view.pieces):
            by_layer = [{"layer": layers[j], "hookpoint": view.hookpoints[j], "features": [
                {"feature": int(f), "activation": round(float(a), 4),
                 "name": label_of(names, view.hookpoints[j], int(f))}
                for f, a in zip(view.top_idx_TLK[t, j], view.top_act_TLK[t, j], strict=True)
                if f >= 0]} for j in range(len(layers)) if not view.flagged_TL[t, j]]
            skipped = [layers[j] for j in range(len(layers)) if view.flagged_TL[t, j]]
            tokens.append({"token": piece, "layers": by_layer, "skipped_layers": skipped})
        return {"atlas": name, "text": view.text, "layers": layers, "tokens": tokens,
                "hookpoints": list(view.hookpoints), "notices": list(view.notices)}

    @friendly("writing the texts")
    def steer_text(self, atlas: str, prompt: str, layer: int | str, feature: int,
                   strength: float = 0.4, max_new_tokens: int = 48) -> dict:
        """Write a reply to the prompt twice, greedily: as the model is, and with one SAE
        feature's direction added at its layer (steering).

        Args:
            atlas: SAE set name from list_atlases ("" for the app's default)
            prompt: the request to answer (up to 2000 characters)
            layer: layer number (its residual SAE first) or a key like "3 (MLP out)" (list_atlases)
            feature: feature number within that layer's SAE
            strength: push, in multiples of the layer's typical size (0.3-0.6 changes the topic)
            max_new_tokens: tokens to write, 1 to 100
        Returns:
            the unsteered and steered text
        """
        name, loaded = self._open(atlas)
        h = self._hookpoint(loaded, layer)
        n_new = check_whole(max_new_tokens, "max_new_tokens", 1, MAX_API_NEW_TOKENS,
                            from_text=True)
        s = steering_strength(strength)
        f = check_whole(feature, "feature", 0, MAX_FEATURE, from_text=True)
        steering = Steering((FeatureSteer(h, f, s),))
        out = side_by_side(loaded, _text(prompt, "prompt", max_chars=MAX_PROMPT_CHARS), steering,
                           GenConfig(max_new_tokens=n_new))
        return {"atlas": name, "layer": layer_of(h), "hookpoint": h, "feature": f,
                "strength": s, "unsteered": out.unsteered, "steered": out.steered,
                "typical_norm": out.norms[h], "seconds": round(out.seconds, 2)}

    @friendly("finding features")
    def find_steering(self, atlas: str, concept: str, related_words: str = "") -> dict:
        """Find SAE features that steer the model towards a concept, chosen by what they do:
        each candidate is pushed on a few neutral prompts and ranked by its reach, the
        highest probability of the concept's words it attains while the next-word
        distribution moves by at most a bound (KL divergence); the best ones get a dose curve
        and a suggested strength.

        Args:
            atlas: SAE set name from list_atlases ("" for the app's default)
            concept: a word or short phrase, e.g. "castle"
            related_words: more words that name the concept, separated by commas
        Returns:
            the candidates (best first) and the suggestion (features, strength, curve)
        """
        name, loaded = self._open(atlas)
        related = "" if related_words is None else related_words
        f = find_steering(loaded, _text(concept, "concept"), _text(related, "related_words",
                                                                   empty_ok=True))
        best = None
        if f.best is not None:
            best = {"features": [{"layer": x.layer, "hookpoint": x.hookpoint, "feature": x.feature,
                                  "strength": x.strength} for x in f.best.steering().features],
                    "strength": f.best.strength, "passes_rule": f.best.curve.dose is not None,
                    "concept_prob": f.best.effect.concept_prob, "kl": f.best.effect.kl,
                    "curve": [{"strength": s, "concept_prob": e.concept_prob, "kl": e.kl}
                              for s, e in zip(f.best.curve.strengths, f.best.curve.effects,
                                              strict=True)]}
        return {"atlas": name, "words": list(f.words), "concept_prob_unsteered": f.p0,
                "rule": {"min_prob": f.rule.min_prob, "min_lift": f.rule.min_lift,
                         "max_kl": f.rule.max_kl},
                "candidates": [{"layer": c.layer, "hookpoint": c.hookpoint, "feature": c.feature,
                                "source": c.source, "reach": c.reach, "efficiency": c.efficiency}
                               for c in f.candidates[:MAX_CANDIDATES]],
                "suggestion": best}

    @friendly("reading the layer map")
    def layer_map(self, atlas: str, task: str = "pos", threshold: float = THRESHOLD,
                  min_support: int = MIN_SUPPORT, min_lift: float = MIN_LIFT) -> dict:
        """The layer map of one labelling task: per layer and label, how many SAE features
        fire mostly on tokens with that label, and the share of features accepted for SAE
        features and two baselines (raw neurons, random directions).

        Args:
            atlas: SAE set name from list_atlases ("" for the app's default)
            task: pos (part of speech), dep (dependency), ent (named entity), shape (word shape)
            threshold: least consistency (share of firings with the label), 0 to 1
            min_support: least number of firings
            min_lift: least lift (consistency over the label's base rate)
        Returns:
            layers, labels and the layers x labels counts
        """
        name, loaded = self._open(atlas)
        lmap = read_layer_map(loaded.folder)
        if lmap is None:
            raise gr.Error(f"The SAE set {name} has no layer map yet.")
        if task not in lmap.vocab:
            raise gr.Error(f"task must be one of {', '.join(lmap.vocab)}, got {task!r:.40}")
        thr = check_number(threshold, "threshold", 0, 1, from_text=True)
        sup = check_whole(min_support, "min_support", 1, 10**9, from_text=True)
        lift = check_number(min_lift, "min_lift", 0, 1e6, from_text=True)
        ids = present_labels(lmap, task)
        counts = lmap.heatmap(task, thr, sup, "sae", lift)[:, ids]
        return {"atlas": name, "task": task, "task_name": TASK_NAMES.get(task, task),
                "threshold": thr, "min_support": sup, "min_lift": lift,
                "layers": [layer_of(h) for h in lmap.hookpoints], "hookpoints": lmap.hookpoints,
                "labels": [lmap.vocab[task][i] for i in ids], "counts": counts.tolist(),
                "accepted_share": {KIND_NAMES[k]: lmap.accept_share(task, thr, sup, k, lift)
                                   for k in KIND_NAMES},
                "tokens_labelled": lmap.n_tokens}


def register_api(atlases: Callable[[], Sequence[str]], default: str | None = None, *,
                 hide_others: bool = True) -> AtlasApi:
    """Add the named endpoints (`ENDPOINTS`) to the Blocks being built. With `hide_others`,
    every other event's endpoint (the tabs' callbacks, which take a folder from the page)
    leaves the API docs and the MCP tools; clients may still call it by name."""
    api = AtlasApi(atlases, default)
    mine = set()
    for name in ENDPOINTS:
        runs = name in MODEL_RUNS
        dep = gr.api(getattr(api, name), api_name=name,
                     concurrency_limit=API_CONCURRENCY if runs else 4,
                     concurrency_id="atlas_api_runs" if runs else f"atlas_api_{name}")
        if dep.get("api_name") != name:
            raise RuntimeError(f"another event already uses the API name {name!r}")
        mine.add(dep.fn)
    if hide_others:
        for fn in get_blocks_context().fns.values():
            if fn.fn not in mine and fn.api_visibility == "public":
                fn.api_visibility = "undocumented"
    return api
