"""The probing figure shows balanced accuracy and AUROC beside F1, and says which documents
the probes read."""

from pytest import approx

from sae_core.explore.probing import ProbingResult, TaskProbes
from ui.layer_map.probing_view import probing_figure


def _task(bacc):
    f1 = {"sae@1": [0.3, 0.5], "sae@5": [0.5, 0.5], "neuron@5": [0.2, 0.4], "dense": [0.9, 0.9]}
    auroc = {m: [v + 0.1 for v in vals] for m, vals in f1.items()}
    scores = {m: [bacc, bacc] for m in f1} if bacc is not None else {}
    return TaskProbes(["a", "b"], [60, 70], f1, auroc, [[3], [4]], scores)


def test_balanced_accuracy_and_auroc_lines_and_the_documents():
    unseen = {"unseen_by_saes": True, "documents": 184, "tokens": 15_026}
    result = ProbingResult(["layers.2", "layers.7"], [{"pos": _task(0.7)}, {"pos": _task(0.8)}],
                           ks=(1, 5), documents=unseen)
    fig = probing_figure(result, "pos")
    lines = {d.name: list(d.y) for d in fig.data}
    assert lines["balanced accuracy, SAE 5 latents"] == approx([0.7, 0.8])
    assert lines["AUROC, neurons 5"] == approx([0.4, 0.4])
    assert "184 documents the SAEs never trained on" in fig.layout.title.text
    old = ProbingResult(["layers.2"], [{"pos": _task(None)}], ks=(1, 5))
    fig = probing_figure(old, "pos")
    assert not any("balanced" in d.name for d in fig.data)  # a result from before bacc
    assert "the SAEs also trained on" in fig.layout.title.text
