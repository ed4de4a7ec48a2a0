"""The numerics of the probes: mean-difference selection, batched logistic fits, scores
(F1, balanced accuracy, AUROC).

Every function handles many independent binary problems at once ("labels", L of them), so
a layer's probes are a few batched matrix products rather than a loop over labels. The
loss is class-balanced (positives and negatives weigh half each), with a small L2 penalty
on the weights (not the intercept); inputs are standardised on the learn tokens first.
"""

from __future__ import annotations

import torch
from torch import Tensor

L2 = 1e-4
"""Penalty on the standardised weights: keeps a perfectly separable label finite."""
NEWTON_STEPS, TOLERANCE = 12, 1e-3
"""IRLS steps for the k-sparse probes (few parameters: converges in ~5-8), stopped when no
standardised weight moves by more than TOLERANCE."""
DENSE_STEPS = 20
"""L-BFGS iterations of the dense probe (a ceiling, fitted well enough, not to the end)."""


def mean_diff_sparse(idx_NK: Tensor, vals_NK: Tensor, label_N: Tensor, n_labels: int,
                     d_sae: int) -> Tensor:
    """(d_sae, n_labels) |mean activation on the label's tokens - mean on the others|, from
    sparse codes (a latent that does not fire counts as 0)."""
    n_pos = torch.bincount(label_N, minlength=n_labels).float()
    flat = (idx_NK * n_labels + label_N[:, None]).flatten()
    vals = vals_NK.flatten().float()
    sums_FL = torch.zeros(d_sae * n_labels).index_add_(0, flat, vals).view(d_sae, n_labels)
    return _abs_diff(sums_FL, n_pos)


def mean_diff_dense(x_ND: Tensor, label_N: Tensor, n_labels: int) -> Tensor:
    """(D, n_labels) the same for dense columns."""
    n_pos = torch.bincount(label_N, minlength=n_labels).float()
    sums_LD = torch.zeros(n_labels, x_ND.shape[1]).index_add_(0, label_N, x_ND.float())
    return _abs_diff(sums_LD.T, n_pos)


def _abs_diff(sums_FL: Tensor, n_pos_L: Tensor) -> Tensor:
    total_F1 = sums_FL.sum(1, keepdim=True)
    n = n_pos_L.sum()
    mean_pos = sums_FL / n_pos_L.clamp(min=1)
    mean_neg = (total_F1 - sums_FL) / (n - n_pos_L).clamp(min=1)
    return (mean_pos - mean_neg).abs()


def top_columns(score_FL: Tensor, k: int) -> Tensor:
    """(L, k) the k columns of largest score per label, best first (ties: lowest id)."""
    order = score_FL.T.argsort(dim=1, descending=True, stable=True)
    return order[:, :k]


def balanced_sample(y_LN: Tensor, m: int, gen: torch.Generator) -> Tensor:
    """(L, min(m, N)) token ids per label: up to half of them positives, the rest
    negatives, each class drawn systematically (evenly spaced in token order from a random
    start: every token of a class has the same chance). The class-balanced loss weighs
    each class by its mean, so such a sample estimates the loss on all the tokens."""
    n_labels, n = y_LN.shape
    m = min(m, n)
    pos = y_LN > 0
    n_pos = pos.sum(1, keepdim=True)
    take_pos = torch.maximum(n_pos.clamp(max=m // 2), m - (n - n_pos))
    j = torch.arange(m)[None, :]
    is_pos = j < take_pos
    count = torch.where(is_pos, n_pos, n - n_pos)
    take = torch.where(is_pos, take_pos, m - take_pos).clamp(min=1)
    start = torch.rand(n_labels, 1, generator=gen)
    rank = ((torch.where(is_pos, j, j - take_pos) + start) * count / take).long()
    at_pos = torch.searchsorted(pos.long().cumsum(1), rank + 1)
    at_neg = torch.searchsorted((~pos).long().cumsum(1), rank + 1)
    return torch.where(is_pos, at_pos, at_neg).clamp(max=n - 1)


def dense_sample(y_LN: Tensor, m: int, per_label: int, gen: torch.Generator
                 ) -> tuple[Tensor, Tensor]:
    """A token sample shared by all labels (ids, (L, n) loss weights): every label's
    positives drawn with chance per_label / support (rare labels keep theirs), the rest
    filled uniformly to ~m tokens; each token weighs 1 / its chance of being drawn, then
    the classes are balanced as in `class_weights`."""
    n_labels, n = y_LN.shape
    pos = y_LN > 0
    q_L1 = (per_label / pos.sum(1, keepdim=True).clamp(min=1)).clamp(max=1)
    by_label = ((torch.rand(n_labels, n, generator=gen) < q_L1) & pos).any(0)
    chance1 = 1 - (1 - q_L1 * pos).prod(0)
    fill = float(((m - chance1.sum()) / (n - chance1.sum()).clamp(min=1)).clamp(0, 1))
    chosen = by_label | (torch.rand(n, generator=gen) < fill)
    ids = chosen.nonzero().squeeze(1)
    inv = 1 / (1 - (1 - chance1[ids]) * (1 - fill))
    y = pos[:, ids]
    mass_pos = (inv * y).sum(1, keepdim=True).clamp(min=1e-9)
    mass_neg = (inv * ~y).sum(1, keepdim=True).clamp(min=1e-9)
    w = inv * torch.where(y, 0.5 / mass_pos, 0.5 / mass_neg) * len(ids)
    return ids, w


def class_weights(y_LN: Tensor) -> Tensor:
    """(L, N) weights: positives and negatives each weigh half the total, mean weight 1."""
    rate = y_LN.mean(1, keepdim=True).clamp(1e-6, 1 - 1e-6)
    return torch.where(y_LN > 0, 0.5 / rate, 0.5 / (1 - rate))


def standardiser(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Mean and std along `dim` (std 1 for a constant column, so it stays 0)."""
    mean = x.mean(dim, keepdim=True)
    std = x.std(dim, keepdim=True)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def _loss(z_LN: Tensor, y_LN: Tensor, w_LN: Tensor, beta_LP: Tensor) -> Tensor:
    """(L,) mean weighted logistic loss plus the L2 term (the last entry is the intercept)."""
    nll = torch.nn.functional.binary_cross_entropy_with_logits(z_LN, y_LN, reduction="none")
    return (w_LN * nll).mean(1) + 0.5 * L2 * beta_LP[:, :-1].square().sum(1)


def fit_sparse(x_LNk: Tensor, y_LN: Tensor, init: Tensor | None = None,
               steps: int = NEWTON_STEPS) -> Tensor:
    """Batched Newton (IRLS) with step halving: (L, k + 1) weights on the columns of
    `x_LNk` (standardised), the intercept last. `init`: (L, j + 1) weights of the first
    j < k columns (a smaller k's fit), a warm start."""
    n_labels, n, k = x_LNk.shape
    x = torch.cat([x_LNk, torch.ones(n_labels, n, 1)], dim=2)
    w = class_weights(y_LN)
    ridge = torch.full((k + 1,), L2)
    ridge[-1] = 1e-6
    beta = torch.zeros(n_labels, k + 1)
    if init is not None:
        beta[:, :init.shape[1] - 1], beta[:, -1] = init[:, :-1], init[:, -1]
    z = torch.bmm(x, beta.unsqueeze(2)).squeeze(2)
    loss = _loss(z, y_LN, w, beta)
    for _ in range(steps):
        p = torch.sigmoid(z)
        grad = torch.bmm((w * (p - y_LN)).unsqueeze(1), x).squeeze(1) / n
        grad[:, :-1] += L2 * beta[:, :-1]
        xs = x * (w * p * (1 - p)).sqrt().unsqueeze(2)
        hess = torch.bmm(xs.transpose(1, 2), xs) / n
        step = torch.linalg.solve(hess + torch.diag(ridge), grad)
        beta, z, loss, moved = _halving(x, y_LN, w, beta, step, loss)
        if moved < TOLERANCE:
            break
    return beta


def _halving(x: Tensor, y: Tensor, w: Tensor, beta: Tensor, step: Tensor, loss: Tensor):
    """Take the Newton step, halved (per label) until the loss does not increase."""
    scale = torch.ones(len(beta), 1)
    for _ in range(6):
        cand = beta - scale * step
        z = torch.bmm(x, cand.unsqueeze(2)).squeeze(2)
        new = _loss(z, y, w, cand)
        worse = (new > loss + 1e-7).unsqueeze(1)
        if not worse.any():
            break
        scale = torch.where(worse, scale / 2, scale)
    ok = ~worse
    if not ok.all():  # labels that found no descent keep their weights
        z = torch.where(ok, z, torch.bmm(x, beta.unsqueeze(2)).squeeze(2))
    moved = float((scale * step * ok).abs().max()) if len(beta) else 0.0
    return torch.where(ok, cand, beta), z, torch.where(ok.squeeze(1), new, loss), moved


def fit_dense(x_ND: Tensor, y_LN: Tensor, w_LN: Tensor, steps: int = DENSE_STEPS) -> Tensor:
    """(D + 1, L) weights of L independent probes on all columns of `x_ND` (standardised),
    intercept last, token weights `w_LN` (mean 1 per label): the sum of their losses
    minimised jointly by L-BFGS (the problems share no parameter, so the joint minimum is
    each one's)."""
    n, d = x_ND.shape
    w_NL = w_LN.T.contiguous()
    y_NL = y_LN.T.contiguous()
    weight = torch.zeros(d, y_LN.shape[0], requires_grad=True)
    bias = torch.zeros(1, y_LN.shape[0], requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=steps, history_size=10,
                            tolerance_grad=1e-7, tolerance_change=1e-10,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        z = torch.addmm(bias, x_ND, weight)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            z, y_NL, weight=w_NL, reduction="sum") / n
        loss = nll + 0.5 * L2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return torch.cat([weight.detach(), bias.detach()])


def f1_scores(z_LN: Tensor, y_LN: Tensor) -> Tensor:
    """(L,) F1 of the positive class, predicting positive where the logit is > 0."""
    pred = z_LN > 0
    pos = y_LN > 0
    tp = (pred & pos).sum(1).float()
    wrong = (pred ^ pos).sum(1).float()
    return 2 * tp / (2 * tp + wrong).clamp(min=1)


def balanced_accuracy(z_LN: Tensor, y_LN: Tensor) -> Tensor:
    """(L,) the mean of the recall of the positives and of the negatives, predicting positive
    where the logit is > 0 (SAEBench's sparse-probing measure: 0.5 for a constant guess
    whatever the base rate, 1 for a perfect probe). A class with no token counts as 0.5."""
    pred = z_LN > 0
    pos = y_LN > 0
    n_pos, n_neg = pos.sum(1), (~pos).sum(1)
    tpr = torch.where(n_pos > 0, (pred & pos).sum(1) / n_pos.clamp(min=1), 0.5)
    tnr = torch.where(n_neg > 0, (~pred & ~pos).sum(1) / n_neg.clamp(min=1), 0.5)
    return (tpr + tnr).float() / 2


def auroc(z_LN: Tensor, y_LN: Tensor) -> Tensor:
    """(L,) area under the ROC curve: the chance a positive outscores a negative, ties
    counting half. One sort: each positive's count of negatives below and level with it
    comes from the running count of negatives at the two ends of its tie group."""
    n_labels, n = z_LN.shape
    z_sorted, order = z_LN.sort(dim=1)
    pos = y_LN.gather(1, order) > 0
    neg_upto = (~pos).long().cumsum(1)  # negatives at or before each sorted position
    j = torch.arange(n).expand(n_labels, n)
    tie = torch.zeros_like(pos)
    tie[:, 1:] = z_sorted[:, 1:] == z_sorted[:, :-1]
    first = torch.where(tie, 0, j).cummax(1).values  # where each tie group starts
    tie_next = torch.zeros_like(pos)
    tie_next[:, :-1] = tie[:, 1:]
    last = torch.where(tie_next, n - 1, j).flip(1).cummin(1).values.flip(1)  # ... ends
    below = neg_upto.gather(1, first) - (~pos).gather(1, first).long()
    level = neg_upto.gather(1, last) - below
    wins = ((2 * below + level).float() * pos).sum(1) / 2
    n_pos = pos.sum(1).float()
    return wins / (n_pos * (n - n_pos)).clamp(min=1)


def fit_k(x_LMk: Tensor, y_LM: Tensor, init: Tensor | None):
    """Probe weights on the raw columns ((L, k), (L,)) and on the standardised ones (the
    warm start of the next k)."""
    mean, std = standardiser(x_LMk, 1)
    beta = fit_sparse((x_LMk - mean) / std, y_LM, init)
    w_Lk = beta[:, :-1] / std.squeeze(1)
    return w_Lk, beta[:, -1] - (w_Lk * mean.squeeze(1)).sum(1), beta


def scatter_columns(cols_Lk: Tensor, w_Lk: Tensor, n_cols: int) -> Tensor:
    """(n_cols, L) each label's weights in its own column, 0 on columns it does not use."""
    n_labels, k = cols_Lk.shape
    out = torch.zeros(n_cols, n_labels)
    out.index_put_((cols_Lk.flatten(), torch.arange(n_labels).repeat_interleave(k)),
                   w_Lk.flatten(), accumulate=True)
    return out


def latent_columns(idx_NK: Tensor, vals_NK: Tensor, chosen_LK: Tensor, tok_LM: Tensor,
                    d_sae: int) -> Tensor:
    """(L, M, k) activations of each label's chosen latents on its sampled tokens (0 where
    not firing): the union of the chosen latents made dense once, then gathered."""
    union = chosen_LK.unique()
    column = torch.full((d_sae,), -1, dtype=torch.long)
    column[union] = torch.arange(len(union))
    col_NK = column[idx_NK]
    hit = (col_NK >= 0) & (vals_NK != 0)
    rows = torch.arange(len(idx_NK))[:, None].expand_as(idx_NK)
    dense_NU = torch.zeros(len(idx_NK), len(union))
    dense_NU.index_put_((rows[hit], col_NK[hit]), vals_NK[hit], accumulate=True)
    return dense_NU[tok_LM[:, :, None], column[chosen_LK][:, None, :]]
