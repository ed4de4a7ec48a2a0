"""The Live view tab's callbacks: bad input is a gr.Error, rows choose features."""

import pytest

from ui.search import tab as ui_search
from ui.shared import choice as ui_choice


def test_tab_callbacks_answer_bad_input_with_gr_error_and_rows_choose_features(tiny_atlas):
    import gradio as gr

    from ui.live import tab as ui_live

    plot, _, _, table, view = ui_live.run_live(str(tiny_atlas), "the cat 🙂 sat")
    assert view.n_tokens == 4 and len(plot.data) >= 1 and table.columns[:2].tolist() == [
        "layer", "feature"]
    for bad in ("", "\x00"):
        with pytest.raises(gr.Error, match="empty"):
            ui_live.run_live(str(tiny_atlas), bad)
    assert ui_live.run_live("", "text") == gr.skip()  # no set yet: an info toast, no error
    with pytest.raises(gr.Error, match="out of range"):
        ui_live.pick_token(str(tiny_atlas), view, 99)
    hits, _ = ui_search.run_search(str(tiny_atlas), "Paris is big")
    assert hits.columns[:2].tolist() == ["layer", "feature"]
    with pytest.raises(gr.Error, match="not in this layer map"):
        ui_search.run_label_search(str(tiny_atlas), 9, "pos", "NOUN", 0.5, 1)
    evt = gr.SelectData(None, {"index": [0, 2], "value": 0, "row_value": hits.iloc[0].tolist()})
    chosen, md, _ = ui_choice.choose(hits, evt)
    assert chosen == (int(hits["layer"][0]), int(hits["feature"][0])) and "feature" in md
