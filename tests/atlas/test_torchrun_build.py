"""`torchrun --nproc_per_node 2 -m sae_core train --parallel layers`: each rank trains its
share of the layers, rank 0 gathers them and writes one complete atlas, the same as a build
in one process."""

import json
import subprocess
import sys
from pathlib import Path

from sae_core.atlas.build import build_atlas
from sae_core.atlas.layout import is_built, load_atlas, read_info
from sae_core.config import BuildConfig, TrainConfig
from sae_core.lm import load_lm
from tests.tiny import WORDS, tiny_lm

ROOT = Path(__file__).resolve().parents[2]
SIZES = ["--expansion", "2", "--k", "4", "--batch-tokens", "64", "--lm-batch-tokens", "64",
         "--seq-len", "16", "--held-out", "8", "--no-bf16"]


def test_layer_split_writes_one_complete_atlas_equal_to_one_process(tmp_path):
    model = tmp_path / "tiny-model"
    tiny = tiny_lm()
    tiny.model.save_pretrained(model)
    tiny.tokenizer.save_pretrained(model)
    corpus = tmp_path / "corpus.jsonl"
    lines = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(40)) for i in range(40)]
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in lines))
    out = tmp_path / "split"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sae_core", "train", "--model", str(model), "--corpus", str(corpus),
         "--parallel", "layers", "--out", str(out), *SIZES],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.count("built ") == 1  # rank 0 alone reports
    info, metrics, saes, _ = load_atlas(out)  # complete: every SAE file matches its digest
    assert list(info.hookpoints) == list(saes) == list(metrics) == ["layers.0", "layers.1",
                                                                 "layers.2"]
    assert info.ranks == 2 and info.parallel == "layers x2"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".split.")] == [
        ".split.lock"]  # no staging folder or checkpoint left

    alone = build_atlas(tmp_path / "alone", lm=load_lm(str(model)),
                        data=BuildConfig(corpus=str(corpus), seq_len=16, held_out=8),
                        cfg=TrainConfig(expansion=2, k=4, batch_tokens=64, lm_batch_tokens=64,
                                        bf16=False))
    assert is_built(alone)
    assert read_info(alone).sae_files == info.sae_files  # the same SAEs, byte for byte
