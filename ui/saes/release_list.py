"""The `/list_releases` endpoint: the Hub releases the app knows, as plain data.

No `from __future__ import annotations` here: Gradio reads the type hints as real types.
"""

from sae_core.hub.registry import RELEASES

from ..serving import public
from ..serving.errors import friendly
from .hub_panel import verdicts

MAX_NAME_CHARS = 200


@friendly("listing the releases")
def list_releases(model: str = "", release: str = "") -> list[dict]:
    """The pretrained SAE releases on the Hugging Face Hub this app knows (SAELens's release
    table): which it can load, and why not the others. Load one in the SAEs tab.

    Args:
        model: only releases trained on this model (a Hugging Face id; "" for all)
        release: one release's name, to list its SAEs too ("" for every release, without them)
    Returns:
        one entry per release: name, repo, model, layout, SAE counts, loadable here, and why not
    """
    model = str(model or "")[:MAX_NAME_CHARS].strip()
    name = str(release or "")[:MAX_NAME_CHARS].strip()
    if name and name not in RELEASES:
        raise ValueError(f"Unknown release {name!r:.60}: call list_releases without one to "
                         "see them all.")
    offered, v = set(public.offered(public.policy())), verdicts()
    out = []
    for r in RELEASES.values():
        if (name and r.name != name) or (model and r.model != model):
            continue
        why = v[r.name].reason or ("" if r.name in offered else "not offered on this public demo")
        entry = {"release": r.name, "repo_id": r.repo_id, "model": r.model, "layout": r.format,
                 "saes": len(r.saes), "loadable_saes": len(v[r.name].supported),
                 "loadable": not why, "why_not": why,
                 "neuronpedia": any(s.neuronpedia for s in r.saes)}
        if name:
            entry["sae_list"] = [
                {"id": s.id, "hook": s.hook, "layer": s.layer, "neuronpedia": s.neuronpedia,
                 "loadable": s.id not in v[r.name].refused,
                 "why_not": v[r.name].refused.get(s.id, "")} for s in r.saes]
        out.append(entry)
    return out
