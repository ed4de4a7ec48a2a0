import torch
from pytest import approx

from sae_core.explore.probing import ProbingResult, TaskProbes
from ui.layer_map.probing_view import probing_figure


def _task(f1_sae1, f1_dense):
    f1 = {"sae@1": f1_sae1, "sae@5": [0.5, 0.5], "neuron@5": [0.2, 0.4], "dense": f1_dense}
    return TaskProbes(["a", "b"], [60, 70], f1, dict(f1), [[3], [4]])


def test_lines_follow_the_task_and_the_layers():
    empty = TaskProbes([], [], {}, {}, [])
    result = ProbingResult(["layers.2", "layers.7"], [
        {"pos": _task([0.2, 0.4], [0.9, 1.0]), "ent": _task([1.0, 1.0], [1.0, 1.0])},
        {"pos": _task([0.6, 0.8], [0.8, 0.8]), "ent": empty},
    ], ks=(1, 5))
    fig = probing_figure(result, "pos")
    lines = {d.name: list(d.y) for d in fig.data}
    assert list(fig.data[0].x) == [2, 7]
    assert lines["SAE, 1 latent"] == approx([0.3, 0.7])
    assert lines["raw neurons, 5"] == approx([0.3, 0.3])
    assert lines["whole residual (ceiling)"] == approx([0.95, 0.8])
    # all tasks: the mean of the tasks' means; a task without labels does not count
    every = {d.name: list(d.y) for d in probing_figure(result, None).data}
    assert every["SAE, 1 latent"] == approx([0.65, 0.7])
    assert "part of speech" in fig.layout.title.text


def test_bands_shade_their_line_and_the_random_model_is_dashed():
    from ui.layer_map.view import CONTROL_MODEL

    # the draws of SAE k = 1's F1 over held-out documents: 200 evenly spaced values a layer
    draws_LB = torch.stack([torch.linspace(0.2, 0.4, 200), torch.linspace(0.6, 0.8, 200)])
    result = ProbingResult(["layers.2", "layers.7"], [
        {"pos": _task([0.2, 0.4], [0.9, 1.0])}, {"pos": _task([0.6, 0.8], [0.8, 0.8])}],
        ks=(1, 5), draws={"sae@1/f1/pos": draws_LB})
    fig = probing_figure(result, "pos", control=result)
    filled = [d for d in fig.data if d.fill == "tonexty"]
    # the 95% percentile interval of 200 draws: the 6th and the 195th smallest
    assert len(filled) == 1 and list(filled[0].y) == approx(draws_LB[:, 194].tolist())
    assert probing_figure(result, "dep").data[0].fill is None  # no draws of that task
    dashed = [d.name for d in fig.data if d.name and d.name.endswith(CONTROL_MODEL)]
    assert dashed == [f"SAE, 1 latent, {CONTROL_MODEL}", f"SAE, 5 latents, {CONTROL_MODEL}"]
