"""A small table of known pretrained SAE releases on the Hub, per model.

SAELens release names are not repo ids: the repo and the folder of each SAE come from
SAELens's `pretrained_saes.yaml` (copied here from SAELens 6.54.12 for the few we list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..lm import EMBEDDED_ID
from .fetch import HubError

Format = Literal["saelens", "sparsify"]
MODEL_ALIASES = {
    "gpt2-small": "gpt2",
    "pythia-70m-deduped": "EleutherAI/pythia-70m-deduped",
    "pythia-70m": "EleutherAI/pythia-70m",
}
"""TransformerLens model names (used in SAELens configs) -> Hugging Face ids."""


@dataclass(frozen=True)
class Release:
    name: str
    """What the user picks: a SAELens release name, or the repo id for sparsify repos."""
    repo_id: str
    """The Hugging Face repo holding the SAEs."""
    model: str
    """Hugging Face id of the model the SAEs were trained on."""
    format: Format
    saes: tuple[tuple[str, str], ...]
    """(SAE id, folder in the repo) pairs; the id is a TransformerLens hook or a hookpoint."""
    note: str = ""
    """What a user must know before trusting the features on raw HF activations."""
    run_on: str = ""
    """The model to load them on by default when it differs from `model` (offline here)."""

    @property
    def sae_ids(self) -> list[str]:
        return [sae_id for sae_id, _ in self.saes]

    def path_of(self, sae_id: str) -> str:
        paths = dict(self.saes)
        if sae_id not in paths:
            raise HubError(f"release {self.name!r} has no SAE {sae_id!r}; it has "
                             f"{', '.join(self.sae_ids)}")
        return paths[sae_id]


RELEASES: dict[str, Release] = {r.name: r for r in (
    Release(
        "EleutherAI/sae-SmolLM2-135M-64x", "EleutherAI/sae-SmolLM2-135M-64x",
        "HuggingFaceTB/SmolLM2-135M", "sparsify",
        tuple((f"layers.{i}.mlp", f"layers.{i}.mlp") for i in range(30)),
        note="TopK SAEs (36,864 latents, k=32) on the MLP outputs of the *base* SmolLM2-135M; "
             "the embedded model is its Instruct version: same shapes, similar activations.",
        run_on=EMBEDDED_ID,
    ),
    Release(
        # blocks.0.hook_resid_pre (the embeddings) is left out: it has no hookpoint here.
        "gpt2-small-res-jb", "jbloom/GPT2-Small-SAEs-Reformatted", "gpt2", "saelens",
        tuple((h, h) for h in [*(f"blocks.{i}.hook_resid_pre" for i in range(1, 12)),
                               "blocks.11.hook_resid_post"]),
        note="Trained on TransformerLens activations with center_writing_weights=True: the "
             "residual stream there is each token's HF residual minus its mean over dimensions, "
             "so reconstructions of raw HF activations are off by that mean.",
    ),
    Release(
        # blocks.0.hook_resid_pre (path e-res-sm, the embeddings) is left out, as above.
        "pythia-70m-deduped-res-sm", "ctigges/pythia-70m-deduped__res-sm_processed",
        "EleutherAI/pythia-70m-deduped", "saelens",
        tuple((f"blocks.{i}.hook_resid_post", f"{i}-res-sm") for i in range(6)),
    ),
    Release(
        "pythia-70m-deduped-mlp-sm", "ctigges/pythia-70m-deduped__mlp-sm_processed",
        "EleutherAI/pythia-70m-deduped", "saelens",
        tuple((f"blocks.{i}.hook_mlp_out", f"{i}-mlp-sm") for i in range(6)),
    ),
)}


def canonical_model(name: str) -> str:
    """A model name compared across conventions: alias resolved, org dropped, lower case."""
    return MODEL_ALIASES.get(name, name).rsplit("/", 1)[-1].lower()


def same_model(a: str, b: str) -> bool:
    return bool(a and b) and canonical_model(a) == canonical_model(b)


def release_label(release: Release) -> str:
    return f"{release.name} ({release.model}, {len(release.saes)} SAEs)"


def slug(text: str) -> str:
    """A folder-safe name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--")).strip("-.") or "sae"
