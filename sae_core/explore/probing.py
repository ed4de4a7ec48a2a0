"""k-sparse probing per layer and task (SAEBench's sparse probing, on token labels).

How much of a token label (part of speech, dependency, entity, word shape) a layer's SAE
makes readable from a few latents: for each label with enough support, rank the latents
by the difference of their mean activation with and without the label on the learn half,
fit a logistic probe on the top k, and score it on the held-out half (F1 of the label and
balanced accuracy at p = 0.5, AUROC). The same with k raw residual dimensions (the
control), and a dense probe on the whole residual (the ceiling: what is linearly there at
all). The batched numerics are in probing_fit.py. Both halves come from corpus documents the
SAEs never trained on (unseen.py: `probe_unseen`), split by window as the labelled pass
splits.

F1 and balanced accuracy have intervals: a bootstrap over the held-out documents (at the end
of this module). The probes stay as they were fitted (on the learn half); a draw weights
every document of the held-out half by how often it was drawn (sae_core/stats.py), so a
label's confusion counts in the draw are its per-document counts weighted and summed, and
its F1 and balanced accuracy follow from them exactly as probing_fit.f1_scores and
balanced_accuracy compute them (all weights 1 gives the scores themselves). A layer's value
in a draw is the mean over a task's labels; every layer and method takes the same draws, so
a mean over layers or a difference of methods (SAE less neurons, real model less random
model, when both probed the same documents) has its interval from the same draws. AUROC has
no interval (it is not a sum over documents).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..activations import layer_of
from ..atlas.layout import PROBING_FILE, read_derived
from ..atomic import CorruptFile, load_tensors, read_json, save_tensors, write_json
from ..corpus import load_texts
from ..stats import group_weights, percentile_interval
from .firings import MAP_TASKS, LabelledPass, LayerFirings, n_documents
from .probing_fit import (
    auroc,
    balanced_accuracy,
    balanced_sample,
    dense_sample,
    f1_scores,
    fit_dense,
    fit_k,
    latent_columns,
    mean_diff_dense,
    mean_diff_sparse,
    scatter_columns,
    standardiser,
    top_columns,
)
from .unseen import unseen_pass

KS = (1, 2, 5, 20)
KINDS = ("sae", "neuron", "dense")
MIN_SUPPORT = 50
"""Positive tokens a label needs in the learn half and in the held-out half."""
MAX_BASE_RATE = 0.5
"""Majority labels ("none", "word_start") are not a feature to find."""
EXCLUDED = ("sep",)
SPARSE_MAX_TOKENS = 1024
"""The k-sparse probes learn on this many tokens per label (up to half positives)."""
AUROC_MAX_TOKENS = 4096
"""AUROC is estimated on this many held-out tokens per label (up to half positives; it
does not depend on the classes' proportions), F1 on all of them."""
DENSE_MAX_TOKENS, DENSE_PER_LABEL = 4096, 48
"""The dense probe learns on ~this many tokens shared by all labels, with up to ~48
positives of each label among them (time: it is a ceiling, fitted on a sample)."""
FORMAT_VERSION = 2
PROBE_BOOT = 200
"""Document draws per interval (as the layer map's MAP_BOOT)."""
LEVEL = 0.95
METRICS = ("f1", "bacc")
"""The scores with intervals: each is a function of a label's confusion counts."""


@dataclass(frozen=True)
class TaskProbes:
    """One task of one layer, per eligible label (same order in every list)."""

    labels: list[str]
    support: list[int]
    """Positive tokens in the held-out half."""
    f1: dict[str, list[float]]
    """method ("sae@5", "neuron@5", "dense") -> held-out F1 per label."""
    auroc: dict[str, list[float]]
    """The same for AUROC (on a balanced sample of the held-out half, AUROC_MAX_TOKENS)."""
    latents: list[list[int]]
    """The SAE latents of the largest k, best first, per label."""
    bacc: dict[str, list[float]] = field(default_factory=dict)
    """The same for balanced accuracy (SAEBench's measure), on all held-out tokens."""

    def mean_f1(self, method: str, metric: str = "f1") -> float | None:
        """Mean over labels of `metric` ("f1", "bacc" or "auroc"); None when the task has
        no eligible label (or the result predates the metric)."""
        scores = getattr(self, metric).get(method, []) if self.labels else []
        return round(sum(scores) / len(scores), 4) if scores else None


LayerProbes = dict[str, TaskProbes]
"""task -> its probes, for one layer."""


def method_name(kind: str, k: int | None) -> str:
    return "dense" if kind == "dense" else f"{kind}@{k}"


@dataclass(frozen=True)
class ProbingResult:
    hookpoints: list[str]
    layers: list[LayerProbes]
    ks: tuple[int, ...] = KS
    sae_fingerprint: str = ""
    """Of the SAEs it was computed from (atlas/fingerprint.py): another atlas's is stale."""
    documents: dict = field(default_factory=dict)
    """Which tokens: {"unseen_by_saes": True, "documents": n, "tokens": n} for corpus
    documents the SAEs never trained on; unseen_by_saes False (or {}: an older result) for
    the labelled pass's documents, which the SAEs trained on."""
    draws: dict[str, Tensor] = field(default_factory=dict, compare=False)
    """f"{method}/{metric}/{task}" -> (n_layers, B) the task's mean score in each bootstrap
    draw of the held-out documents (`task_mean_draws`; NaN: no label); {} for older results."""

    def per_layer(self, kind: str, k: int | None = None, task: str | None = None,
                  metric: str = "f1") -> list[float | None]:
        """Mean `metric` (f1, bacc, auroc) per layer over the task's labels (task None: the
        mean of the tasks' means); None for a layer without an eligible label."""
        method = method_name(kind, k)
        out = []
        for layer in self.layers:
            tasks = [task] if task else list(layer)
            means = [m for t in tasks if t in layer
                     if (m := layer[t].mean_f1(method, metric)) is not None]
            out.append(sum(means) / len(means) if means else None)
        return out

    def bands(self, kind: str, k: int | None = None, task: str | None = None,
              metric: str = "f1") -> list[tuple[float, float] | tuple[None, None]] | None:
        """Per layer the 95% interval of `per_layer` over document draws; None when the
        result has no draws of this metric."""
        draws = mean_over_tasks(self.draws, method_name(kind, k), metric,
                                None if task is None else [task])
        return None if draws is None else layer_bands(draws)

    def mean(self, kind: str, k: int | None = None, metric: str = "f1") -> float:
        """Mean `metric` over layers x tasks (each a mean over its labels); NaN when none."""
        method = method_name(kind, k)
        cells = [m for layer in self.layers for tp in layer.values()
                 if (m := tp.mean_f1(method, metric)) is not None]
        return sum(cells) / len(cells) if cells else float("nan")

    def table(self) -> list[dict]:
        """Per layer and task: mean F1 of SAE probes at every k, neurons at k = 5, dense;
        the same columns with `_bacc` and `_auroc` for the other measures."""
        rows = []
        for h, layer in zip(self.hookpoints, self.layers, strict=True):
            for task, tp in layer.items():
                row = {"layer": layer_of(h), "hookpoint": h, "task": task,
                       "labels": len(tp.labels)}
                cols = {f"sae_k{k}": method_name("sae", k) for k in self.ks}
                cols |= {"neuron_k5": "neuron@5"} if 5 in self.ks else {}
                for suffix, metric in (("", "f1"), ("_bacc", "bacc"), ("_auroc", "auroc")):
                    row |= {c + suffix: tp.mean_f1(m, metric) for c, m in
                            (cols | {"dense": "dense"}).items()}
                rows.append(row)
        return rows

    def save(self, path: Path | str) -> None:
        """The draws (.safetensors), then the .json (written last: the marker)."""
        path = Path(path)
        path.with_suffix(".json").unlink(missing_ok=True)
        if self.draws:
            save_tensors(path.with_suffix(".safetensors"), self.draws)
        data = {"version": FORMAT_VERSION, "hookpoints": self.hookpoints, "ks": list(self.ks),
                "draws": bool(self.draws), "sae_fingerprint": self.sae_fingerprint,
                "documents": self.documents,
                "layers": [{t: asdict(tp) for t, tp in layer.items()} for layer in self.layers]}
        write_json(path, data, indent=None)

    @classmethod
    def load(cls, path: Path | str) -> ProbingResult:
        """CorruptFile when the file is damaged or not a probing result."""
        data = read_json(path)
        try:
            layers = [{t: TaskProbes(**tp) for t, tp in layer.items()}
                      for layer in data["layers"]]
            draws = (load_tensors(Path(path).with_suffix(".safetensors"))
                     if data.get("draws") else {})
            return cls(list(data["hookpoints"]), layers, tuple(data["ks"]),
                       data["sae_fingerprint"], data.get("documents", {}), draws)
        except (KeyError, TypeError, AttributeError, FileNotFoundError) as err:
            raise CorruptFile(f"{path} is not a probing result ({err}); build it again") from err


def read_probing(folder: Path | str | None, fingerprint: str | None = None
                 ) -> ProbingResult | None:
    """The current probing result of an atlas folder, or None (atlas/layout.read_derived)."""
    return read_derived(folder, PROBING_FILE, ProbingResult.load, fingerprint)


def eligible_labels(label_N: Tensor, heldout_N: Tensor, names: list[str]) -> list[int]:
    """Label ids with >= MIN_SUPPORT positives in each half and base rate <= MAX_BASE_RATE,
    "sep" excluded."""
    n = len(names)
    learn = torch.bincount(label_N[~heldout_N], minlength=n)
    held = torch.bincount(label_N[heldout_N], minlength=n)
    rate = (learn + held).float() / max(len(label_N), 1)
    return [i for i in range(n) if learn[i] >= MIN_SUPPORT and held[i] >= MIN_SUPPORT
            and rate[i] <= MAX_BASE_RATE and names[i] not in EXCLUDED]


def compute_probing(firings: dict[str, LayerFirings], vocab: dict[str, list[str]], *,
                    ks: tuple[int, ...] = KS, sae_fingerprint: str = "",
                    documents: dict | None = None) -> ProbingResult:
    """Probes for every layer of `firings` (firings.collect_firings), learned on their
    tokens outside `heldout_N` and scored on those in it; `documents` says where the tokens
    come from (ProbingResult.documents; default: the labelled pass's documents)."""
    n_docs = n_documents(firings)
    w_BG = group_weights(n_docs, n_boot=PROBE_BOOT) if n_docs else None
    probed = [probe_layer(f, vocab, ks, w_BG) for f in firings.values()]
    draws = stack_layers([d for _, d in probed], PROBE_BOOT) if w_BG is not None else {}
    return ProbingResult(list(firings), [p for p, _ in probed], tuple(ks), sae_fingerprint,
                         documents if documents is not None else {"unseen_by_saes": False},
                         draws)


def probe_unseen(run: LabelledPass, cache: str | None = None) -> ProbingResult:
    """The probing product: probes learned and scored on the corpus documents the SAEs never
    trained on (unseen.unseen_pass, one more pass of the model over them); on the labelled
    pass's tokens when the atlas does not say what its SAEs trained on, or none is unseen."""
    seen = unseen_pass(run.lm, run.saes, run.info, load_texts(run.info.corpus), cache=cache,
                       medians=run.medians)
    if seen is None:
        return compute_probing(run.firings, run.vocab)
    return compute_probing(seen.firings, seen.vocab, documents={
        "unseen_by_saes": True, "documents": len(seen.documents), "tokens": seen.tokens})


def probe_layer(f: LayerFirings, vocab: dict[str, list[str]], ks: tuple[int, ...] = KS,
                w_BG: Tensor | None = None) -> tuple[LayerProbes, dict[str, Tensor]]:
    """Every task's eligible labels as independent binary problems, fitted in one batch
    per kind and k; with document draws `w_BG` (and `f.doc_N`), each method's task means of
    F1 and balanced accuracy per draw (`task_mean_draws`)."""
    held = f.heldout_N
    tasks = [t for t in MAP_TASKS if t in f.labels]
    ids = {t: eligible_labels(f.labels[t], held, vocab[t]) for t in tasks}
    if not any(ids.values()):
        return {t: TaskProbes([], [], {}, {}, [], {}) for t in tasks}, {}
    y_LN = torch.cat([(f.labels[t][None, :] == torch.tensor(ids[t])[:, None]).float()
                      for t in tasks])
    learn = ProbeHalf(f, ~held, y_LN)
    test = ProbeHalf(f, held, y_LN)
    mean, std = standardiser(learn.x_ND, 0)
    learn.x_ND, test.x_ND = (learn.x_ND - mean) / std, (test.x_ND - mean) / std
    sae_LK, neuron_LK = [], []
    for t in tasks:
        lab, n_labels = f.labels[t][~held], len(vocab[t])
        score = mean_diff_sparse(learn.idx_NK, learn.vals_NK, lab, n_labels, f.d_sae)
        sae_LK.append(top_columns(score[:, ids[t]], max(ks)))
        score = mean_diff_dense(learn.x_ND, lab, n_labels)
        neuron_LK.append(top_columns(score[:, ids[t]], max(ks)))
    sae_LK, neuron_LK = torch.cat(sae_LK), torch.cat(neuron_LK)
    gen = torch.Generator().manual_seed(0)
    z = sparse_probe_logits(learn, test, sae_LK, neuron_LK, ks, f.d_sae, gen)
    ids_M, w_LM = dense_sample(learn.y_LN, DENSE_MAX_TOKENS, DENSE_PER_LABEL, gen)
    w_dense = fit_dense(learn.x_ND[ids_M], learn.y_LN[:, ids_M], w_LM)
    z["dense"] = (test.x_ND @ w_dense[:-1] + w_dense[-1]).T
    tok_LM = balanced_sample(test.y_LN, AUROC_MAX_TOKENS, gen)
    y_LM = test.y_LN.gather(1, tok_LM)
    scores = {"f1": {m: f1_scores(z_LN, test.y_LN) for m, z_LN in z.items()},
              "auroc": {m: auroc(z_LN.gather(1, tok_LM), y_LM) for m, z_LN in z.items()},
              "bacc": {m: balanced_accuracy(z_LN, test.y_LN) for m, z_LN in z.items()}}
    ends = torch.tensor([len(ids[t]) for t in tasks]).cumsum(0).tolist()
    rows = {t: slice(end - len(ids[t]), end) for t, end in zip(tasks, ends, strict=True)}
    draws = ({} if w_BG is None or f.doc_N is None else
             task_mean_draws(z, test.y_LN, f.doc_N[held], w_BG, rows))
    return _per_task(rows, ids, vocab, test.y_LN, scores, sae_LK), draws


class ProbeHalf:
    """The learn or the held-out tokens of a layer."""

    def __init__(self, f: LayerFirings, rows_N: Tensor, y_LN: Tensor):
        self.x_ND = f.x_ND[rows_N].float()
        self.idx_NK = f.idx_NK[rows_N]
        self.vals_NK = f.vals_NK[rows_N].float() * f.valid_NK[rows_N]
        self.y_LN = y_LN[:, rows_N]


def sparse_probe_logits(learn: ProbeHalf, test: ProbeHalf, sae_LK: Tensor, neuron_LK: Tensor,
                        ks: tuple[int, ...], d_sae: int, gen: torch.Generator
                        ) -> dict[str, Tensor]:
    """Held-out logits (L, N) of the k-sparse probes, each fitted on a balanced sample of
    the learn tokens per label (k in increasing order, each fit starting from the last)."""
    tok_LM = balanced_sample(learn.y_LN, SPARSE_MAX_TOKENS, gen)
    y_LM = learn.y_LN.gather(1, tok_LM)
    inputs = {"sae": latent_columns(learn.idx_NK, learn.vals_NK, sae_LK, tok_LM, d_sae),
              "neuron": learn.x_ND[tok_LM[:, :, None], neuron_LK[:, None, :]]}
    z = {}
    for kind, cols_LK in (("sae", sae_LK), ("neuron", neuron_LK)):
        beta = None
        for k in sorted(ks):
            w_Lk, b_L, beta = fit_k(inputs[kind][:, :, :k], y_LM, beta)
            if kind == "sae":
                w_FL = scatter_columns(cols_LK[:, :k], w_Lk, d_sae)
                z_NL = torch.nn.functional.embedding_bag(
                    test.idx_NK, w_FL, per_sample_weights=test.vals_NK, mode="sum")
            else:
                z_NL = test.x_ND @ scatter_columns(cols_LK[:, :k], w_Lk, test.x_ND.shape[1])
            z[f"{kind}@{k}"] = z_NL.T + b_L[:, None]
    return z


def _per_task(rows: dict[str, slice], ids: dict[str, list[int]],
              vocab: dict[str, list[str]], y_held_LN: Tensor,
              scores: dict[str, dict[str, Tensor]], sae_LK: Tensor) -> LayerProbes:
    """Split the stacked problems back into tasks (`rows` of them), as plain lists
    (`scores`: metric -> method -> (L,))."""
    out = {}
    support = y_held_LN.sum(1).long()
    for t, r in rows.items():
        per = {metric: {m: [round(v, 4) for v in s[r].tolist()] for m, s in by.items()}
               for metric, by in scores.items()}
        out[t] = TaskProbes([vocab[t][i] for i in ids[t]], support[r].tolist(),
                            per["f1"], per["auroc"], sae_LK[r].tolist(), per["bacc"])
    return out


# The intervals of the scores: a bootstrap over the held-out documents (module doc).


def confusion_by_document(z_LN: Tensor, y_LN: Tensor, doc_N: Tensor, n_docs: int) -> Tensor:
    """(4, L, n_docs) float64: true positives, false positives, false negatives and true
    negatives of each label's probe (positive where the logit is > 0) in each document."""
    pred, pos = z_LN > 0, y_LN > 0
    cells = torch.stack([pred & pos, pred & ~pos, ~pred & pos, ~pred & ~pos]).double()
    out = torch.zeros(4, z_LN.shape[0], n_docs, dtype=torch.float64)  # cpu: host counts
    return out.index_add_(2, doc_N.long(), cells)


def scores_from_counts(counts_4L: Tensor, metric: str) -> Tensor:
    """F1 or balanced accuracy from confusion counts (4, L, ...) -> (L, ...), as
    probing_fit computes them (a class with no token counts as 0.5 in balanced accuracy)."""
    tp, fp, fn, tn = counts_4L
    if metric == "f1":
        return 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    if metric != "bacc":
        raise ValueError(f"no interval for {metric!r}: one of {METRICS}")
    tpr = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), 0.5)
    tnr = torch.where(tn + fp > 0, tn / (tn + fp).clamp(min=1), 0.5)
    return (tpr + tnr) / 2


def label_draws(counts_4LG: Tensor, w_BG: Tensor, metric: str) -> Tensor:
    """(L, B) each label's score in each document draw `w_BG` (stats.group_weights)."""
    return scores_from_counts(counts_4LG @ w_BG.T.double(), metric)


def task_mean_draws(z: dict[str, Tensor], y_LN: Tensor, doc_N: Tensor, w_BG: Tensor,
                    rows: dict[str, slice]) -> dict[str, Tensor]:
    """f"{method}/{metric}/{task}" -> (B,) float32: the mean over the task's labels (`rows`
    of the stacked problems) of each method's held-out score, per document draw."""
    out = {}
    for method, z_LN in z.items():
        counts = confusion_by_document(z_LN, y_LN, doc_N, w_BG.shape[1])
        for metric in METRICS:
            per_label = label_draws(counts, w_BG, metric)
            out |= {f"{method}/{metric}/{task}": per_label[r].mean(0).float()
                    for task, r in rows.items() if r.stop > r.start}
    return out


def stack_layers(per_layer: list[dict[str, Tensor]], n_boot: int) -> dict[str, Tensor]:
    """(n_layers, B) per key, NaN for a layer without that task's labels."""
    keys = sorted({k for d in per_layer for k in d})
    nan = torch.full((n_boot,), float("nan"))  # cpu: host draws
    return {k: torch.stack([d.get(k, nan) for d in per_layer]) for k in keys}


def mean_over_tasks(draws: dict[str, Tensor], method: str, metric: str,
                    tasks: list[str] | None) -> Tensor | None:
    """(n_layers, B): the mean of the tasks' means per draw (tasks None: every task with
    draws), as ProbingResult.per_layer averages them; None when none has draws."""
    prefix = f"{method}/{metric}/"
    rows = [d for k, d in draws.items() if k.startswith(prefix)
            and (tasks is None or k[len(prefix):] in tasks)]
    return torch.stack(rows).nanmean(0) if rows else None


def layer_bands(draws_LB: Tensor, level: float = LEVEL
                ) -> list[tuple[float, float] | tuple[None, None]]:
    """Per layer the `level` percentile interval of its draws ((None, None): no draw
    defined, a layer without labels)."""
    out = []
    for d_B in draws_LB:
        lo, hi = percentile_interval(d_B, level)
        out.append((None, None) if lo != lo else (lo, hi))
    return out
