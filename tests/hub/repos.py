"""Hand-built Hugging Face caches for the hub tests: models--org--name/blobs,
snapshots/<rev> with symlinks and refs/main, loaded offline (HF_HUB_OFFLINE=1 from
conftest) through the real huggingface_hub code."""

import hashlib
import json
import os
from pathlib import Path

import torch
from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS
from safetensors.torch import save as st_bytes

REV = "1f" * 20


D, S = 32, 64  # tiny model width, SAE width


def put_repo(cache, repo_id, files, rev=REV, ref="main"):
    """Write `files` (repo path -> bytes or dict) into the HF cache layout as commit `rev`,
    which the branch `ref` names; return the cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        data = json.dumps(data).encode() if isinstance(data, dict) else data
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / rev / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(rev)
    return cache


def fake_hf_api(cache, calls):
    """An `HfApi` stand-in: records every call in `calls`; `upload_folder` picks the files
    as the real one does (its glob filter, its default ignore patterns) and commits them
    into the hand-built `cache`, where the real `snapshot_download` finds them offline.
    Nothing leaves the machine."""

    class FakeApi:
        def __init__(self, token=None, **kw):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def create_branch(self, repo_id, **kw):
            calls.append(("create_branch", repo_id, kw))

        def upload_folder(self, *, repo_id, folder_path, revision=None, allow_patterns=None,
                          ignore_patterns=None, **kw):
            calls.append(("upload_folder", repo_id, dict(
                kw, folder_path=folder_path, revision=revision, ignore_patterns=ignore_patterns)))
            root = Path(folder_path).resolve()
            names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
            sent = filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=[
                *(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS])
            files = {name: (root / name).read_bytes() for name in sent}
            rev = hashlib.sha1(b"".join(n.encode() + d for n, d in files.items())).hexdigest()
            put_repo(cache, repo_id, files, rev=rev, ref=revision or "main")
            return type("CommitInfo", (), {"commit_url": f"https://hub/{repo_id}/commit/{rev}",
                                           "oid": rev})()

    return FakeApi


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
