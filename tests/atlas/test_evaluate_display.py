"""The SAEs tab shows CE loss recovered and KL at the precision their errors allow, and an
older metrics.json (no errors, no KL) still displays."""

import json
import shutil

from sae_core.metrics import format_with_error
from ui.saes import tab as saes

NEW_KEYS = ("ce_recovered_se", "kl", "kl_se", "ce_windows")


def _copy(tiny_atlas, tmp_path, strip: bool):
    out = tmp_path / "atlas" / ("old" if strip else "new")
    shutil.copytree(tiny_atlas, out)
    metrics = json.loads((out / "metrics.json").read_text())
    if strip:
        metrics = {h: {k: v for k, v in m.items() if k not in NEW_KEYS} for h, m in metrics.items()}
        (out / "metrics.json").write_text(json.dumps(metrics))
    return out, metrics


def test_new_metrics_show_value_and_error(tiny_atlas, tmp_path):
    out, metrics = _copy(tiny_atlas, tmp_path, strip=False)
    md, table, fig = saes.atlas_summary(str(out))
    assert "CE loss and KL on 8 held-out windows" in md
    for row, m in zip(table.to_dict("records"), metrics.values(), strict=True):
        assert row["CE loss recovered"] == format_with_error(m["ce_recovered"],
                                                             m["ce_recovered_se"])
        assert " ± " in row["CE loss recovered"] and " ± " in row["KL to the model (nats/token)"]
        # Rounded to the error's last shown digit: off by at most half of that digit.
        value, err = (float(x) for x in row["CE loss recovered"].split(" ± "))
        assert err > 0 and abs(value - m["ce_recovered"]) <= 0.5 * err + 1e-12
    assert list(fig.data[1].error_y.array) == [m["ce_recovered_se"] for m in metrics.values()]
    sets = saes.sets_table(root=tmp_path / "atlas")
    assert " ± " in sets["mean CE loss recovered"].iloc[0]


def test_old_metrics_display_without_errors(tiny_atlas, tmp_path):
    out, metrics = _copy(tiny_atlas, tmp_path, strip=True)
    md, table, fig = saes.atlas_summary(str(out))
    assert "held-out windows" not in md
    shown = table["CE loss recovered"].tolist()
    assert shown == [f"{m['ce_recovered']:.3f}" for m in metrics.values()]
    assert table["KL to the model (nats/token)"].tolist() == ["n/a"] * 3
    assert not fig.data[1].error_y.visible
    sets = saes.sets_table(root=tmp_path / "atlas")
    assert sets["mean CE loss recovered"].iloc[0] == (
        f"{sum(m['ce_recovered'] for m in metrics.values()) / 3:.3f}")
    assert sets["mean KL"].iloc[0] == "n/a"
