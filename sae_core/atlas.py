"""The build pipeline and the on-disk layout of an atlas (one SAE per layer).

checkpoints/atlas/<name>/
  atlas.json           model, corpus, training config, tokens, timings
  metrics.json         per hookpoint: FVU, L0, dead latents, CE loss recovered
  layers.N/            cfg.json + sae_weights.safetensors (SAELens layout)
  _checkpoint/         resumable training state; removed when the build finishes
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from .config import TrainConfig
from .corpus import load_texts, split_windows, token_windows
from .evaluate import ce_losses, reconstruction_stats
from .lm import EMBEDDED, EMBEDDED_ID, LM, load_lm
from .sae import Sae
from .train import MultiTrainer, train_saes

ATLAS_ROOT = Path("checkpoints/atlas")
DEFAULT_ATLAS = ATLAS_ROOT / "default"
Report = Callable[[str, float], None]
"""report(message, fraction_done) for progress bars (tqdm or gr.Progress)."""


def _save_saes(trainer: MultiTrainer, out: Path) -> None:
    for h, state in trainer.layers.items():
        state.sae.save(out / h, extra_metadata={
            "median_norm": state.median_norm, "n_tokens": state.trainer.n_tokens,
            "n_dropped": state.n_dropped, "outlier_factor": trainer.cfg.outlier_factor,
        })


def evaluate_atlas(
    lm: LM, saes: dict[str, Sae], medians: dict[str, float], windows, *, outlier_factor: float,
    ce_windows: int = 4, report: Report | None = None,
) -> dict[str, dict]:
    stats = reconstruction_stats(lm, saes, windows, medians, outlier_factor=outlier_factor)
    ce = ce_losses(
        lm, saes, windows[:ce_windows], medians, outlier_factor=outlier_factor,
        progress=(lambda i, n: report(f"CE loss, layer {i}/{n}", i / n)) if report else None,
    )
    return {h: {"fvu": s.fvu(), "l0": s.l0(), "dead_frac_heldout": s.dead_fraction(),
                "heldout_tokens": s.n, **ce[h]} for h, s in stats.items()}


def build_atlas(
    out: Path = DEFAULT_ATLAS, *, model: str = "embedded", corpus: str = "default",
    layers: list[int] | None = None, cfg: TrainConfig | None = None, seq_len: int = 256,
    held_out: int = 64, report: Report | None = None, lm: LM | None = None,
) -> Path:
    """Train one SAE per residual layer in one pass over the corpus, evaluate, save."""
    cfg = cfg or TrainConfig()
    lm = lm or load_lm(model)
    hookpoints = [f"layers.{i}" for i in (range(lm.n_layers) if layers is None else layers)]
    for h in hookpoints:
        lm.module_for(h)  # a bad layer fails before any work
    windows = token_windows(lm.tokenizer, load_texts(corpus), seq_len)
    train_w, test_w = split_windows(windows, held_out)
    out.mkdir(parents=True, exist_ok=True)

    def on_batch(done: int, total: int, stats: dict) -> None:
        fvu = [v for v in stats["fvu"].values() if v == v]  # NaN while buffers fill
        if report:
            mean = f"{sum(fvu) / len(fvu):.3f}" if fvu else "(filling the shuffle buffer)"
            report(f"training batch {done}/{total}, mean FVU {mean}", done / total)

    t0 = time.perf_counter()
    trainer = train_saes(lm, train_w, hookpoints, cfg, checkpoint_dir=out / "_checkpoint",
                         progress=on_batch)
    train_s = time.perf_counter() - t0
    _save_saes(trainer, out)
    medians = {h: s.median_norm for h, s in trainer.layers.items()}
    metrics = evaluate_atlas(lm, trainer.saes(), medians, test_w,
                             outlier_factor=cfg.outlier_factor, report=report)
    for h, state in trainer.layers.items():
        metrics[h] |= {
            "dead_frac_train": state.trainer.dead_fraction(),
            "train_tokens": state.trainer.n_tokens, "dropped_tokens": state.n_dropped,
        }
    n_tokens = trainer.step_no * (cfg.lm_batch_tokens // seq_len) * seq_len
    info = {
        "model": lm.name, "corpus": corpus, "seq_len": seq_len, "train_cfg": asdict(cfg),
        "hookpoints": hookpoints, "train_windows": len(train_w), "heldout_windows": held_out,
        "lm_tokens": n_tokens, "train_seconds": train_s, "total_seconds": time.perf_counter() - t0,
        "train_tok_s": n_tokens / train_s, "torch_threads": torch.get_num_threads(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "atlas.json").write_text(json.dumps(info, indent=1))
    # Finished: the resumable state is no longer needed.
    for f in (out / "_checkpoint").glob("*"):
        f.unlink()
    (out / "_checkpoint").rmdir()
    return out


def is_built(folder: Path) -> bool:
    return (folder / "atlas.json").exists() and (folder / "metrics.json").exists()


def load_atlas(folder: Path) -> tuple[dict, dict[str, dict], dict[str, Sae]]:
    """(atlas info, metrics per hookpoint, SAEs per hookpoint) of a finished build."""
    if not is_built(folder):
        raise FileNotFoundError(f"{folder} is not a finished atlas (no atlas.json/metrics.json)")
    info = json.loads((folder / "atlas.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    saes = {h: Sae.load(folder / h) for h in info["hookpoints"]}
    return info, metrics, saes


def check_fits(saes: dict[str, Sae], lm: LM) -> None:
    """A clear error when SAEs were made for activations of another width."""
    for h, sae in saes.items():
        lm.module_for(h)
        if sae.cfg.d_in != lm.d_model:
            raise ValueError(
                f"SAE for {h} reads d_in={sae.cfg.d_in} but {lm.name} has d_model={lm.d_model}"
            )


LAYER_MAP_FILE = "layer_map.safetensors"
LABEL_DOC_STRIDE = 8
"""The layer map labels every 8th corpus document (~45k tokens, all genres)."""


def medians_of(saes: dict[str, Sae]) -> dict[str, float]:
    return {h: sae.metadata["median_norm"] for h, sae in saes.items()}


def ensure_layer_map(folder: Path, *, lm: LM | None = None, report: Report | None = None):
    """The atlas's layer map, computed once (labels with spaCy, one pass) and cached."""
    from .labels import load_or_build_labels
    from .layermap import LayerMapData, compute_layer_map

    path = folder / LAYER_MAP_FILE
    if path.exists():
        return LayerMapData.load(path)
    info, _, saes = load_atlas(folder)
    lm = lm or load_lm(EMBEDDED if info["model"] == EMBEDDED_ID else info["model"])
    check_fits(saes, lm)
    if report:
        report("labelling the corpus with spaCy", 0.0)
    texts = load_texts(info["corpus"])[::LABEL_DOC_STRIDE]
    data = load_or_build_labels(lm.tokenizer, texts, info["seq_len"], folder / "labels")
    if report:
        report(f"layer map over {data.windows.numel():,} tokens", 0.3)
    lmap = compute_layer_map(lm, saes, medians_of(saes), data,
                             outlier_factor=info["train_cfg"]["outlier_factor"])
    lmap.save(path)
    return lmap
