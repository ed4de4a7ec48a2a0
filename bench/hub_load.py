"""Loading a 16k-wide pretrained SAE costs little more than reading its file: the real
loading path (hub/load.py: the cache lookup, config.json, the safetensors read, conversion
into an `Sae`) against `safetensors.torch.load_file` alone on the same file.

The SAE is Gemma Scope 2 shaped (d_in 2304, d_sae 16384, float32, lower-case tensor names,
~302 MB) in a temporary Hugging Face cache laid out as huggingface_hub writes it (blobs,
snapshot symlinks, refs/main), read offline. The file is read once first so both sides see
a warm page cache; then `--repeats` rounds alternate the two, and the medians are compared.

safetensors (0.8) maps the file and reads pages only when touched, so each side ends by
summing every tensor it got (the bytes then really are read, into the same kind of pages);
the untouched times (the fixed cost of the cache lookup and config) are printed too.

    flock /tmp/bench.lock .venv/bin/python bench/hub_load.py [--repeats 7]

Ends with `RESULT load_s=... read_s=... load_over_read=...` (target: <= 1.5).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from sae_core.hub.load import load_sae  # noqa: E402

REPO, FOLDER = "google/gemma-scope-2-2b-pt", "resid_post/layer_12_width_16k_l0_small"
D_IN, D_SAE = 2304, 16384
REV = "ab" * 20
CACHE: list[Path] = []


def link(repo: Path, name: str, blob: Path) -> Path:
    path = repo / "snapshots" / REV / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(blob, path.parent))
    return path


def write_cache(cache: Path) -> Path:
    """The SAE's two files in a hand-made HF cache; returns the weights' snapshot path."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    tensors = {"w_enc": torch.randn(D_IN, D_SAE, generator=gen) / 48,  # cpu: bench data
               "w_dec": torch.randn(D_SAE, D_IN, generator=gen) / 48,
               "b_enc": torch.zeros(D_SAE), "b_dec": torch.zeros(D_IN),
               "threshold": torch.rand(D_SAE, generator=gen)}
    tmp = repo / "blobs" / "weights.tmp"
    save_file(tensors, str(tmp))
    blob = tmp.with_name(hashlib.sha256(tmp.read_bytes()).hexdigest())
    tmp.rename(blob)
    cfg = json.dumps({"architecture": "jump_relu", "model_name": "gemma-v3-2b-pt",
                      "hf_hook_point_in": "model.layers.12.output"}).encode()
    cfg_blob = repo / "blobs" / hashlib.sha256(cfg).hexdigest()
    cfg_blob.write_bytes(cfg)
    link(repo, f"{FOLDER}/config.json", cfg_blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return link(repo, f"{FOLDER}/params.safetensors", blob)


def timed(fn) -> float:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    del out
    return elapsed


def touch(tensors) -> float:
    """Every byte read (a sum per tensor)."""
    return sum(float(t.detach().sum()) for t in tensors)


def load_touched() -> float:
    (sae, _), _ = load_sae(REPO, FOLDER, cache_dir=CACHE[0])
    return touch(sae.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        CACHE.append(cache)
        weights = write_cache(cache)
        size_mb = weights.resolve().stat().st_size / 1e6
        (sae, _), src = load_sae(REPO, FOLDER, cache_dir=cache)  # warm: page cache, imports
        assert (sae.cfg.d_in, sae.cfg.d_sae, src.format) == (D_IN, D_SAE, "gemma_3")
        del sae
        times: dict[str, list[float]] = {"load": [], "read": [], "load_lazy": [],
                                         "read_lazy": []}
        for _ in range(args.repeats):
            times["read"].append(timed(lambda: touch(load_file(str(weights)).values())))
            times["load"].append(timed(load_touched))
            times["read_lazy"].append(timed(lambda: load_file(str(weights))))
            times["load_lazy"].append(timed(lambda: load_sae(REPO, FOLDER, cache_dir=cache)))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"file {size_mb:.0f} MB; {args.repeats} rounds; {torch.get_num_threads()} threads")
        for name, values in times.items():
            print(f"{name:>9} s: " + " ".join(f"{t:.4f}" for t in values))
        print(f"untouched: load_sae {med['load_lazy'] * 1e3:.1f} ms, load_file "
              f"{med['read_lazy'] * 1e3:.1f} ms (the fixed cost of the cache and config)")
        print(f"RESULT load_s={med['load']:.3f} read_s={med['read']:.3f} "
              f"load_over_read={med['load'] / med['read']:.2f}")


if __name__ == "__main__":
    main()
