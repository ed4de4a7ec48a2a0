"""What the feature index tests share: hookpoints and the top contexts by definition."""



def _brute_force(vals, idx, d_sae, seq_len, cfg):
    """The top contexts by definition, with Python loops."""
    peaks = {}  # (feature, window, chunk) -> (value, token)
    for t in range(len(vals)):
        for v, f in zip(vals[t].tolist(), idx[t].tolist(), strict=True):
            if v <= 0:
                continue
            key = (f, t // seq_len, (t % seq_len) // cfg.chunk)
            best = peaks.get(key)
            if best is None or v > best[0]:  # ties keep the earlier token
                peaks[key] = (v, t)
    top = {}
    for (f, _, _), (v, t) in peaks.items():
        top.setdefault(f, []).append((-v, t))
    return {f: [t for _, t in sorted(c)[:cfg.top_n]] for f, c in top.items()}


HOOKS = ["layers.0", "layers.2"]
