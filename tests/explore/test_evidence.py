"""The layer evidence from one pass: every product written and current, each equal to the
product computed on its own, and only what is missing computed again."""

import shutil

import torch

from sae_core.explore.evidence import PRODUCTS, ensure_layer_evidence, missing_evidence
from sae_core.explore.firings import labelled_pass
from sae_core.explore.layermap import centres_of, counts_from_firings, ensure_layer_map
from sae_core.explore.lineage import compute_lineage, read_lineage
from sae_core.explore.names import read_names
from sae_core.explore.probing import read_probing
from sae_core.jobs.stages import ready_parts
from tests.conftest import tiny_lm


def _bytes(folder, product):
    return sorted((p.name, p.read_bytes()) for p in folder.iterdir()
                  if p.name.startswith(product.file.split(".")[0]))


def test_one_pass_writes_every_product_as_computed_alone(tiny_atlas, tmp_path):
    folder = tmp_path / "atlas"
    shutil.copytree(tiny_atlas, folder)
    for product in PRODUCTS:  # the stamp of each, written last
        (folder / product.file).with_suffix(".json").unlink()
    lm = tiny_lm()
    assert missing_evidence(folder) == [p.name for p in PRODUCTS]
    assert "layer map" not in ready_parts(folder)
    seconds = ensure_layer_evidence(folder, lm=lm)
    assert set(seconds) == {"pass", *(p.name for p in PRODUCTS)}
    assert missing_evidence(folder) == [] and "layer map" in ready_parts(folder)

    run = labelled_pass(folder, lm, None)  # the same pass again, each product on its own
    alone = counts_from_firings(run.firings, run.vocab, centres_of(run.saes))
    lmap = ensure_layer_map(folder)  # read back: the one-pass map
    assert lmap.counts.keys() == alone.counts.keys()
    assert all(torch.equal(lmap.counts[k], alone.counts[k]) for k in alone.counts)
    lineage = read_lineage(folder)
    single = compute_lineage(run.saes, run.firings)
    for k, table in single.tables.items():  # stored with fp16 cosines and Jaccards
        assert torch.allclose(lineage.tables[k].float(), table.float(), atol=1e-3,
                              equal_nan=True), k
    assert read_probing(folder).hookpoints == read_names(folder).hookpoints == list(
        run.info.hookpoints)

    kept = {p.name: _bytes(folder, p) for p in PRODUCTS}
    assert ensure_layer_evidence(folder, lm=lm) == {}  # all current: no pass at all
    for p in folder.glob("probing*"):
        p.unlink()
    assert set(ensure_layer_evidence(folder, lm=lm)) == {"pass", "probing"}
    for p in PRODUCTS:
        if p.name != "probing":
            assert _bytes(folder, p) == kept[p.name], p.name  # not written again
    assert _bytes(folder, PRODUCTS[1]) == kept["probing"]  # recomputed: the same bytes
