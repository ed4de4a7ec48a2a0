"""The bad-input matrix of the tabs' own callbacks, which Gradio serves under their function
names (left out of the API page, but a stranger can call them): a clear message for bad
input, names that stay in checkpoints/, and the README's limits as the code applies them."""

import pytest
from gradio_client.exceptions import AppError

from sae_core.atlas.layout import ATLAS_ROOT
from tests.counts import count
from tests.ui.bad_input_helpers import BIG, serve, still_answers
from ui.saes import tab as saes
from ui.saes import train_panel


@pytest.fixture(scope="module")
def served(tiny_atlas):
    """(client, base URL, atlas folder): one server for the module's cases."""
    for client, base, _ in serve(tiny_atlas):
        yield client, base, str(tiny_atlas)


# The tabs' own callbacks, called by name as a stranger can: (endpoint, arguments with None
# for the atlas folder, the message's pattern). Values outside a dropdown's choices or a
# slider's or number box's range are refused by Gradio itself, before the callback, with a
# message that quotes the value and what is allowed (but not the field's label).
# Text where a slider wants a number fails in Gradio's own preprocessing, which Gradio
# reports only as a generic message (show_error is off): not fixable from a callback.
NOT_A_CHOICE, ABOVE = "is not in the list of choices", "is greater than maximum"
NOT_FLOAT = "has raised an exception"
BAD_UI = [
    ("/run_live", (None, ""), "The text is empty"),
    ("/run_live", (None, " \x00\x07 "), "The text is empty"),
    ("/run_live", (None, BIG), "The text is 100,000 characters long; the limit is 10,000"),
    ("/run_live", ("/etc", "the cat"), NOT_A_CHOICE),
    ("/run_live", ("../../etc/passwd", "the cat"), NOT_A_CHOICE),
    ("/run_live", ("", "the cat"), NOT_A_CHOICE),
    ("/run_search", (None, BIG, "norm"), "The search text is 100,000 characters"),
    ("/run_search", (None, "   ", "norm"), "empty"),
    ("/run_label_search", (None, 1, "colour", "NOUN", 0.5, 1), NOT_A_CHOICE),
    ("/run_label_search", (None, 1, "pos", "NOUN", 2.0, 1), ABOVE),
    ("/run_label_search", (None, 1, "pos", "NOUN", 0.5, "lots"), NOT_FLOAT),
    ("/run_label_search", (None, 99, "pos", "NOUN", 0.5, 1), NOT_A_CHOICE),
    ("/run_label_search", (None, 1, "pos", "no-such-label", 0.5, 1), NOT_A_CHOICE),
    ("/label_choices", (None, "../../etc"), NOT_A_CHOICE),
    ("/steer", (None, "the", 1, 3, 1e9, "add", "all", "", 4, 0, 0), ABOVE),
    ("/steer", (None, "the", 1, 3, 0.5, "add", "all", "", 4, 0, 2**40), ABOVE),
    ("/steer", (None, "the", 1, 3, 0.5, "boost", "all", "", 4, 0, 0), NOT_A_CHOICE),
    ("/steer", (None, "the", 1, 64, 0.5, "add", "all", "", 4, 0, 0), "feature 64 does not"),
    ("/steer", (None, "the", 9, 3, 0.5, "add", "all", "", 4, 0, 0), "layer 9 is not in"),
    ("/steer", (None, "", 1, 3, 0.5, "add", "all", "", 4, 0, 0), "type a prompt"),
    ("/steer", (None, "the", 1, 3, 0.5, "add", "all", "1:3:nan", 4, 0, 0), "strength must"),
    ("/steer", (None, "the", 1, 3, 0.5, "add", "all", "1:-3:0.5", 4, 0, 0), "feature must"),
    ("/steer", (None, "the", 1, 3, 0.5, "add", "all", BIG, 4, 0, 0), "More features is 100,000"),
    ("/steer", (None, BIG, 1, 3, 0.5, "add", "all", "", 4, 0, 0), "The prompt is 100,000"),
    ("/steer", (None, "a" * 2_001, 1, 3, 0.5, "add", "all", "", 4, 0, 0), "the limit is 2,000"),
    ("/steer", (None, "the", 1, 3, 0.5, "add", "all", "1:3:25", 4, 0, 0),
     "strength must be a number from -20 to 20, got '25'"),
    ("/steer", (None, "the", 1, 3, 0.5, "add", "all", "1:2:x", 4, 0, 0), "layer:feature:strength"),
    ("/steer", (None, "the", 1, 3, 0.5, "add", "all", "", 4, 9, 0), ABOVE),
    ("/steer", (None, "the", 1, 3, 0.5, "add", "all", "", 4, "hot", 0), NOT_FLOAT),
    ("/find_features", (None, BIG, "", 0, 2), "The concept is 100,000"),
    ("/find_features", (None, "cat", "", 2, 0), "comes after the last"),
    ("/find_features", (None, "cat", BIG, 0, 2), "Related words is 100,000"),
    ("/baselines", (None, "the", "cat", "", 9, 4, 0, 0), "layer 9 is not in this SAE set"),
    ("/baselines", (None, "the", "", "", 1, 4, 0, 0), "type a word"),
    ("/page_outputs", (None, 1, 64), "out of range"),
    ("/page_outputs", (None, 1, -1), "less than minimum"),
    ("/page_outputs", (None, 9, 0), NOT_A_CHOICE),
    ("/pushed_outputs", (None, 1, 64), "feature 64 does not exist"),
    ("/pushed_outputs", (None, 9, 0), NOT_A_CHOICE),
    ("/run_name_search", (None, BIG), "The search text is 100,000 characters"),
    ("/redraw", (None, "pos", "sae", 7, 20, 2.0), ABOVE),
    ("/redraw", (None, "colour", "sae", 0.5, 20, 2.0), NOT_A_CHOICE),
    ("/hub_load", ("../../etc/passwd", "sae", "", "", None), "repo id"),
    ("/hub_load", ("/etc/passwd", "sae", "", "", None), "repo id"),
    ("/hub_load", ("org/name", "sae", "", "x" * 500, None), "The name is 500 characters"),
    ("/export_set", ("/etc", "x", ""), NOT_A_CHOICE),
    ("/export_set", (None, "x" * 500, ""), "export folder name is 500"),
    ("/export_set", (None, "x", "../../etc/passwd"), "repo id"),
    ("/push_set", (None, "x", "/etc/passwd"), "repo id"),
    ("/start_training", ("", "embedded", "all", 8, 32, 307_200, ["resid"]),
     "give the new set a name"),
    ("/start_training", ("x" * 500, "embedded", "all", 8, 32, 307_200, ["resid"]),
     "The name is 500"),
    ("/start_training", ("ok-name", "embedded", "all", 8, 32, 10**12, ["resid"]), ABOVE),
    ("/start_training", ("ok-name", "embedded", "0,x", 8, 32, 307_200, ["resid"]),
     "layers must be"),
    ("/start_training", ("ok-name", "embedded", "9" * 300, 8, 32, 307_200, ["resid"]),
     "The layers is"),
    ("/start_training", ("ok-name", "embedded", "all", 8, 32, 307_200, ["mlps"]), NOT_A_CHOICE),
    ("/start_training", ("ok-name", "embedded", "all", 8, 32, 307_200, []), "sites must be"),
    ("/run_sweep", (None, "1", "k", "8,x"), "must be numbers"),
    ("/run_sweep", (None, "1", "k", "0.5"), "k must be a whole number from 1 to 512"),
    ("/run_sweep", (None, "1", "lr", "8"), NOT_A_CHOICE),
    ("/run_sweep", (None, "99", "k", "8"), "not in this SAE set"),
]


@pytest.mark.parametrize(("endpoint", "args", "message"), BAD_UI,
                         ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(BAD_UI)])
def test_ui_callbacks_bad_input_is_a_clear_error(served, endpoint, args, message):
    client, _, folder = served
    count("bad-input cases tried")
    args = tuple(folder if a is None else a for a in args)
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=endpoint)
    still_answers(client, folder)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "a/../../b"])
def test_visitor_names_stay_in_checkpoints(name):
    """A training or export name from a visitor names a folder right under its root."""
    count("bad-input cases tried")
    try:
        job = train_panel.train_job(name, "embedded", "all", 8, 32, 307_200)
    except ValueError as err:  # nothing left of the name: refused
        assert "give the new set a name" in str(err)
    else:
        assert job.folder.parent == ATLAS_ROOT and job.folder.name not in ("", ".", "..")
    out = saes.export_folder("/some/atlas", name)
    assert out.parent == saes.EXPORT_ROOT and out.name not in ("", ".", "..")


def test_the_readme_states_the_limits_in_force():
    """The README's Limits section quotes the limits the code applies."""
    from pathlib import Path

    from sae_core import errors as lib_errors
    from sae_core.steer import generation
    from ui import api
    from ui.live import tab as live
    from ui.saes import train_panel
    from ui.search import tab as search
    from ui.steering import inputs as steering_inputs

    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text[text.index("## Limits"):text.index("## Steering, measured")]
    for n in (live.MAX_TEXT_CHARS, search.MAX_QUERY_CHARS, generation.MAX_PROMPT_CHARS,
              steering_inputs.MAX_EXTRA_CHARS, steering_inputs.MAX_CONCEPT_CHARS,
              steering_inputs.MAX_RELATED_CHARS, steering_inputs.MAX_SEED,
              steering_inputs.MAX_FEATURE, api.MAX_TEXT_CHARS, api.MAX_TEXT_TOKENS,
              api.MAX_API_NEW_TOKENS, saes.MAX_IDS_CHARS, saes.MAX_NAME_CHARS,
              saes.MAX_REPO_CHARS, train_panel.MAX_MODEL_CHARS, lib_errors.MAX_TEXT_CHARS):
        assert f"{n:,}" in section, n
