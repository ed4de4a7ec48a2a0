"""One device for everything that reads an atlas: the LM decides, its SAEs follow, and what
is stored comes back on the CPU (encode.py's module doc). Each view runs on an LM loaded with
a device argument and is compared with the app's default (CPU) run: on the CPU the two code
paths must agree exactly; on CUDA (skipped without one) within bf16 tolerance."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from sae_core.atlas.evaluate import ce_per_window, reconstruction_stats
from sae_core.atlas.layout import open_with
from sae_core.corpus import load_texts, token_windows
from sae_core.encode import encode_batch, sparse_encode
from sae_core.explore.evidence import PRODUCTS
from sae_core.explore.feature_index import collect_codes
from sae_core.explore.feature_stats import IndexConfig
from sae_core.explore.firings import labelled_pass
from sae_core.explore.live import live_view
from sae_core.explore.logit_lens import logit_lens
from sae_core.lm import load_lm
from sae_core.norms import typical_norms
from sae_core.precision import resolve_device
from sae_core.steer import generation
from sae_core.steer.edits import DirectionSteer, FeatureSteer, Steering
from sae_core.steer.generation import GenConfig, generate, prompt_ids
from tests.conftest import tiny_lm
from ui.serving import session

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=CUDA)])
def device(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    """The tiny atlas's model (same seed, same weights) saved as a model folder."""
    lm, out = tiny_lm(), tmp_path_factory.mktemp("tiny_lm")
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def on(tiny_atlas, lm_folder, device):
    """The tiny atlas opened on its model loaded with `device=`."""
    return open_with(tiny_atlas, load_lm(str(lm_folder), device=device))


def leaves_in(obj, path="") -> dict:
    """Every tensor and number inside a result (dataclasses, named tuples, dicts, lists),
    by path."""
    if isinstance(obj, torch.Tensor | float | int):
        return {path: obj}
    if dataclasses.is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        obj = obj._asdict()
    if isinstance(obj, list | tuple):
        obj = dict(enumerate(obj))
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items()
                for k, v in leaves_in(val, f"{path}/{key}").items()}
    return {}


def assert_same(got, want, device: str) -> None:
    """Every tensor of `got` on the CPU and equal to `want`'s, and every number equal:
    exactly on the CPU (the same arithmetic), else floats within bf16 tolerance and 90% of
    ids or flags equal."""
    got, want = leaves_in(got), leaves_in(want)
    assert got.keys() == want.keys() and got
    for key, g in got.items():
        w = torch.as_tensor(want[key])
        if isinstance(g, torch.Tensor):
            assert g.device.type == "cpu", f"{key} is on {g.device}"
        g = torch.as_tensor(g)
        assert g.shape == w.shape and g.dtype == w.dtype, key
        if device == "cpu":
            torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True, msg=key)
        elif g.is_floating_point():
            scale = float(w.float().nan_to_num().abs().max()) if w.numel() else 0.0
            torch.testing.assert_close(g.float(), w.float(), rtol=0.05, atol=0.05 * scale + 1e-3,
                                       equal_nan=True, msg=key)
        elif g.numel():
            assert float((g == w).float().mean()) >= 0.9, key


def windows(loaded, n: int = 6):
    texts = load_texts(loaded.corpus)
    return token_windows(loaded.lm.tokenizer, texts, loaded.info.seq_len)[:n]


def test_the_model_and_the_saes_run_on_the_device(on, device):
    assert on.lm.device.type == device
    params = [p for sae in on.saes.values() for p in sae.parameters()]
    assert params and all(p.device.type == device for p in params)


def test_encoding_runs_there_and_comes_back_to_the_cpu(on, loaded, device):
    ids = windows(on)
    got = encode_batch(on.lm, on.saes, ids, on.medians, outlier_factor=on.outlier_factor)
    want = encode_batch(loaded.lm, loaded.saes, ids, loaded.medians,
                        outlier_factor=loaded.outlier_factor)
    assert_same(got, want, device)
    x_ND = got["layers.1"].acts_BLD[0].to(device)
    vals, idx = sparse_encode(on.saes["layers.1"], x_ND)  # the low-level step stays there
    assert vals.device.type == idx.device.type == device


def test_evaluation_matches_the_cpu_run(on, loaded, device):
    ids = windows(on)
    got = reconstruction_stats(on.lm, on.saes, ids, on.medians)
    want = reconstruction_stats(loaded.lm, loaded.saes, ids, loaded.medians)
    for h in got:
        a, b = got[h], want[h]
        numbers = (a.fvu(), a.l0(), a.dead_fraction(), a.n)
        assert numbers == pytest.approx((b.fvu(), b.l0(), b.dead_fraction(), b.n),
                                        rel=0 if device == "cpu" else 0.05, abs=0)
    ce = ce_per_window(on.lm, on.saes, ids[:3], on.medians, batch=2)
    assert_same(ce, ce_per_window(loaded.lm, loaded.saes, ids[:3], loaded.medians, batch=2),
                device)


def test_the_feature_index_pass_matches_the_cpu_run(on, loaded, device):
    ids, cfg = windows(on), IndexConfig(batch=4)
    got = collect_codes(on.lm, on.saes, on.medians, ids, outlier_factor=on.outlier_factor,
                        cfg=cfg)
    assert_same(got, collect_codes(loaded.lm, loaded.saes, loaded.medians, ids,
                                   outlier_factor=loaded.outlier_factor, cfg=cfg), device)


def test_the_layer_evidence_matches_the_cpu_run(tiny_atlas, on, loaded, device):
    """The labelled pass and every product read from it (layer map, probing, names,
    lineage): the SAEs it loads go to the LM's device, everything it stores is on the CPU."""
    run = labelled_pass(tiny_atlas, on.lm, None)
    plain = labelled_pass(tiny_atlas, loaded.lm, None)
    assert all(p.device.type == device for sae in run.saes.values() for p in sae.parameters())
    assert_same(run.firings, plain.firings, device)
    for product in PRODUCTS:
        assert_same(product.compute(run), product.compute(plain), device)


def test_the_live_view_and_the_logit_lens_match_the_cpu_run(on, loaded, device):
    text = "the cat sat on the mat . Paris is big"
    assert_same(live_view(on, text), live_view(loaded, text), device)
    row = on.saes["layers.2"].W_dec[3].detach()
    assert row.device.type == device
    assert_same(logit_lens(on.lm, row, 5),
                logit_lens(loaded.lm, loaded.saes["layers.2"].W_dec[3].detach(), 5), device)


def _steered(loaded, monkeypatch, device: str) -> tuple[list, list]:
    """(new tokens of an unsteered and a steered row, few-rows linears entered)."""
    entered = []

    class Spy(generation._FewRowsLinear):
        def __enter__(self):
            entered.append(True)
            return super().__enter__()

    monkeypatch.setattr(generation, "_FewRowsLinear", Spy)
    gen = GenConfig(max_new_tokens=10, temperature=1.0, seed=3)
    ids = prompt_ids(loaded.lm, "the cat sat on", gen)
    norms, _ = typical_norms(loaded.lm, loaded.saes, ["layers.1", "layers.2"])
    steer = Steering((FeatureSteer("layers.1", 5, 6.0), FeatureSteer("layers.2", 2, 3.0, "clamp"),
                      DirectionSteer("layers.2", torch.linspace(-1, 1, 32), 2.0)))

    def on_step(logits_BV):
        assert logits_BV.device.type == device

    out = generate(loaded.lm, loaded.saes, norms, ids, [None, steer], gen, on_step=on_step)
    return out, entered


def test_steered_generation_matches_the_cpu_run(on, loaded, device, monkeypatch):
    got, entered = _steered(on, monkeypatch, device)
    want, _ = _steered(loaded, monkeypatch, "cpu")
    assert got[0] != got[1]  # the steering changed the text
    if device == "cpu":
        assert got == want
    assert bool(entered) == (device == "cpu")  # the few-rows linear trick: CPU only


def test_the_app_loads_models_on_its_device(monkeypatch):
    assert session.choose_device(None, {}) == "cpu"
    assert session.choose_device(None, {session.DEVICE_ENV: " auto "}) == "auto"
    assert session.choose_device("cpu", {session.DEVICE_ENV: "cuda"}) == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        session.set_device("tpu")
    monkeypatch.setattr(session, "_device", session.device())
    monkeypatch.setattr(session, "_models", session.OrderedDict())
    asked = []
    monkeypatch.setattr(session, "load_named", lambda name, token=None, device="cpu":
                        asked.append(device) or tiny_lm(n_layers=1, d_model=8))
    assert session.set_device("auto") == resolve_device("auto") == session.device()
    session.model("some-model")
    assert asked == [session.device()]


# Structure: in the modules that meet device tensors, every tensor factory says where its
# tensor lives: `device=`, or a trailing `# cpu: why` on one of the call's lines.
ROOT = Path(__file__).resolve().parents[1]
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "randn", "rand", "tensor", "eye",
             "linspace"}
DEVICE_AWARE = ["sae_core/encode.py", "sae_core/norms.py", "sae_core/atlas/evaluate.py",
                "sae_core/atlas/layout.py", "sae_core/hub/load.py",
                "sae_core/hub/pretrained_atlas.py", "sae_core/jobs", "sae_core/steer",
                "sae_core/train", "sae_core/sae.py", "sae_core/hooks.py", "sae_core/memory.py",
                "sae_core/topk.py", "sae_core/model_controls.py",
                *(f"sae_core/explore/{m}.py" for m in (
                    "concepts", "cross_seed", "feature_index", "feature_page", "firings",
                    "layermap", "lineage",
                    "live", "logit_lens", "names", "names_evidence", "one_pass", "unseen"))]
CPU_ONLY = {f"sae_core/explore/{m}.py" for m in (
    "__init__", "consistency", "controls", "evidence", "feature_path", "feature_stats", "labels",
    "probing", "probing_fit", "search")}
"""Explore modules that only read CPU results (codes, firings, stored products)."""


def unplaced_factories(source: str) -> list[int]:
    """Line numbers of torch factory calls with neither `device=` nor a `# cpu: why`."""
    lines = source.splitlines()
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in FACTORIES and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"):
            continue
        marked = any(re.search(r"# cpu: *\S", line)
                     for line in lines[node.lineno - 1:node.end_lineno])
        if not marked and not any(k.arg == "device" for k in node.keywords):
            bad.append(node.lineno)
    return bad


def test_the_factory_check_catches_an_unplaced_tensor():
    planted = ("import torch\n"
               "a = torch.zeros(3, device=x.device)\n"
               "b = torch.arange(4)  # cpu: indices into CPU results\n"
               "c = torch.full(\n    (2,), 1.0)  # cpu: a reason on the call's last line\n"
               "d = torch.ones(2)  # cpu:\n"
               "e = torch.tensor([1, 2], dtype=torch.long)\n")
    assert unplaced_factories(planted) == [6, 7]


def _device_aware_files() -> list[Path]:
    return sorted(p for m in DEVICE_AWARE for p in
                  ([ROOT / m] if m.endswith(".py") else (ROOT / m).glob("*.py")))


@pytest.mark.parametrize("path", _device_aware_files(), ids=lambda p: p.name)
def test_every_tensor_factory_says_where_its_tensor_lives(path):
    assert unplaced_factories(path.read_text()) == [], path


def test_every_explore_module_is_classified():
    found = {str(p.relative_to(ROOT)) for p in (ROOT / "sae_core/explore").glob("*.py")}
    aware = {m for m in DEVICE_AWARE if m.startswith("sae_core/explore/")}
    assert found == aware | CPU_ONLY and not aware & CPU_ONLY
