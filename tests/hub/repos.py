"""Hand-built Hugging Face caches for the hub tests: models--org--name/blobs,
snapshots/<rev> with symlinks and refs/main, loaded offline (HF_HUB_OFFLINE=1 from
conftest) through the real huggingface_hub code."""

import hashlib
import json
import os

import torch
from safetensors.torch import save as st_bytes

REV = "1f" * 20


D, S = 32, 64  # tiny model width, SAE width


def put_repo(cache, repo_id, files, rev=REV):
    """Write `files` (repo path -> bytes or dict) into the HF cache layout; return the cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        data = json.dumps(data).encode() if isinstance(data, dict) else data
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / rev / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return cache


def raw_saelens(seed=0, d_sae=S, threshold=False):
    g = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(D, d_sae, generator=g) / 4, "b_enc": torch.randn(d_sae, generator=g),
         "W_dec": torch.randn(d_sae, D, generator=g) / 4, "b_dec": torch.randn(D, generator=g)}
    if threshold:
        t["threshold"] = torch.rand(d_sae, generator=g) * 2
    return t


def v6_cfg(arch="standard", hook="blocks.1.hook_resid_post", model="tiny-llama", **kw):
    return {"d_in": D, "d_sae": S, "architecture": arch, "apply_b_dec_to_input": True,
            "normalize_activations": "none", "dtype": "float32", "device": "cpu",
            "metadata": {"model_name": model, "hook_name": hook, "sae_lens_version": "6.5.0"},
            **kw}


def saelens_repo(tmp_path, repo="org/tiny-saes", folder="sae", cfg=None, tensors=None, **extra):
    files = {f"{folder}/cfg.json": cfg or v6_cfg(),
             f"{folder}/sae_weights.safetensors": st_bytes(tensors or raw_saelens())}
    return put_repo(tmp_path, repo, files | extra)


def two_layer_repo(tmp_path, model="tiny-llama"):
    files = {}
    for i, hook in enumerate(["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]):
        files[f"L{i}/cfg.json"] = v6_cfg("topk", hook=hook, model=model, k=4)
        files[f"L{i}/sae_weights.safetensors"] = st_bytes(raw_saelens(seed=i))
    return put_repo(tmp_path / "cache", "org/pair", files)
