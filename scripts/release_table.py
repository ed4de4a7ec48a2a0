"""Build assets/sae_releases.json: SAELens's whole release table, as data.

Reads `sae_lens/pretrained_saes.yaml` from inside the sae-lens wheel (`pip download
sae-lens==6.54.12 --no-deps`; sae-lens is not a run-time dependency of SAE Atlas) and
writes, per release: repo, model (a Hugging Face id), layout (the yaml's `conversion_func`,
"saelens" when it has none, "sparsify" for sparsify repos), config overrides, and per SAE
id its folder, the hook it reads (as SAELens's loader for that layout names it), its
Neuronpedia id, norm scale and average L0. Whether the app can load each one is decided at
run time (sae_core/hub/releases.py), from the converters that exist then.

Run: `python scripts/release_table.py` (downloads ~1 MB), or `--wheel PATH` / `--yaml PATH`
to read a copy already here. PyYAML parses the yaml (it is in the app's environment as a
dependency of gradio and transformers; no new requirement).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_core.atomic import write_text
from sae_core.hub.registry import COLUMNS, MODEL_ALIASES, TABLE_FILE
from sae_core.lm import EMBEDDED_ID

SAE_LENS_VERSION = "6.54.12"
YAML_IN_WHEEL = "sae_lens/pretrained_saes.yaml"
SMOLLM_SPARSIFY = "EleutherAI/sae-SmolLM2-135M-64x"
NOTES = {
    SMOLLM_SPARSIFY: "TopK SAEs (36,864 latents, k=32) on the MLP outputs of the *base* "
                     "SmolLM2-135M; the embedded model is its Instruct version: same shapes, "
                     "similar activations.",
    "center_writing_weights": "Trained on TransformerLens activations with "
                              "center_writing_weights=True: the residual stream there is each "
                              "token's HF residual minus its mean over dimensions, so "
                              "reconstructions of raw HF activations are off by that mean.",
}
RUN_ON = {SMOLLM_SPARSIFY: EMBEDDED_ID}
TL_HOOK = re.compile(r"^(blocks\.\d+\.hook_[a-z_]+?)(?:_\d+)?$")
"""A TransformerLens hook name as an SAE id, with an optional width suffix
(`blocks.8.hook_resid_pre_768` in the feature-splitting release)."""
BLOCK = r"^blocks[.](\d+)[.]"


def _layer(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    if m is None:
        raise ValueError(f"no layer in {text!r} (pattern {pattern!r})")
    return int(m.group(1))


def _gemma_2(name: str, repo: str, sae_id: str, path: str) -> tuple[str, str]:
    # get_gemma_2_config_from_hf: the site comes from the repo name ("res", "mlp", "att").
    if "embedding" in path:
        return "hook_embed", ""
    n = _layer(r"layer_(\d+)", path)
    if "res" in repo:
        return f"blocks.{n}.hook_resid_post", ""
    if "mlp" in repo:
        return f"blocks.{n}.hook_mlp_out", ""
    return f"blocks.{n}.attn.hook_z", ""


def _gemma_3(name: str, repo: str, sae_id: str, path: str) -> tuple[str, str]:
    # get_gemma_3_config_from_hf: the site comes from the folder ("resid_post", ...).
    n = _layer(r"layer_(\d+)", path)
    if "transcoder" in path or "clt" in path:
        return f"blocks.{n}.hook_mlp_in", f"blocks.{n}.hook_mlp_out"
    for site, hook in (("resid_post", "hook_resid_post"), ("attn_out", "attn.hook_z"),
                       ("mlp_out", "hook_mlp_out")):
        if site in path:
            return f"blocks.{n}.{hook}", ""
    raise ValueError(f"{name}: no site in {path!r}")


def _llama_scope(name: str, repo: str, sae_id: str, path: str) -> tuple[str, str]:
    # Llama Scope's L{n}R / A / M: residual stream after block n, attention out, MLP out.
    m = re.match(r"^l(\d+)([ram])_", sae_id)
    if m is None:
        raise ValueError(f"{name}: no layer and site in {sae_id!r}")
    site = {"r": "hook_resid_post", "a": "hook_attn_out", "m": "hook_mlp_out"}[m.group(2)]
    return f"blocks.{m.group(1)}.{site}", ""


def _id_or(pattern: str = r"$^"):
    """The SAE id when it is a hook name (dictionary_learning's ids add "__trainer_N"),
    else the residual stream after block N, N from `pattern` in the folder or the id."""
    def derive(name: str, repo: str, sae_id: str, path: str) -> tuple[str, str]:
        if m := TL_HOOK.match(sae_id.split("__")[0]):
            return m.group(1), ""
        return f"blocks.{_layer(pattern, path + ' ' + sae_id)}.hook_resid_post", ""
    return derive


def _hook_z(name: str, repo: str, sae_id: str, path: str) -> tuple[str, str]:
    return f"blocks.{_layer(BLOCK, sae_id)}.attn.hook_z", ""


def _transcoder(hook_in: str, hook_out: str):
    """Reads `hook_in` and predicts `hook_out` of the layer its folder names ("layer_N...",
    or "N" for mntss's per-layer files)."""
    def derive(name: str, repo: str, sae_id: str, path: str) -> tuple[str, str]:
        n = int(path) if path.isdigit() else _layer(r"layer_(\d+)", path)
        return f"blocks.{n}.{hook_in}", f"blocks.{n}.{hook_out}"
    return derive


HOOKS = {
    "saelens": _id_or(), "sparsify": lambda name, repo, sae_id, path: (sae_id, ""),
    "gemma_2": _gemma_2, "gemma_3": _gemma_3, "llama_scope": _llama_scope,
    "llama_scope_r1_distill": _id_or(r"/L(\d+)R"),
    "dictionary_learning_1": _id_or(r"resid_post_layer_(\d+)"),
    "qwen_scope": _id_or(r"layer(\d+)"), "goodfire": _id_or(r"layer_(\d+)"),
    "deepseek_r1": _id_or(), "temporal": _id_or(), "connor_rob_hook_z": _hook_z,
    "gemma_2_transcoder": _transcoder("ln2.hook_normalized", "hook_mlp_out"),
    "mwhanna_transcoder": _transcoder("mlp.hook_in", "hook_mlp_out"),
    # mntss's config.yaml names the sites; circuit-tracer's Gemma 2 CLTs read the residual
    # stream before the MLP and write the MLP output.
    "mntss_clt_layer_transcoder": _transcoder("hook_resid_mid", "hook_mlp_out"),
}
"""Per layout: (release, repo, SAE id, folder) -> (hook read, hook written or "")."""




def _row(layout: str, name: str, repo: str, raw: dict, prefix: str) -> list:
    sae_id, path = str(raw["id"]), str(raw["path"])
    hook, hook_out = HOOKS[layout](name, repo, sae_id, path)
    l0 = raw.get("l0")
    row = [sae_id, "" if path == prefix + sae_id else path, hook, hook_out,
           raw.get("neuronpedia") or "", raw.get("norm_scaling_factor"),
           None if l0 is None else round(float(l0), 1)]
    while row[-1] in ("", None):
        row.pop()
    return row


def path_prefix(saes: list[dict]) -> str:
    """The folder every SAE's path starts with before its id ("" when there is none)."""
    paths = [(str(s["path"]), str(s["id"])) for s in saes]
    heads = {p[:-len(i)] for p, i in paths if p.endswith(i)}
    whole = all(p.endswith(i) for p, i in paths)
    return heads.pop() if whole and len(heads) == 1 else ""


def _note(name: str, overrides: dict) -> str:
    kwargs = overrides.get("model_from_pretrained_kwargs") or {}
    return NOTES.get(name) or (NOTES["center_writing_weights"]
                               if kwargs.get("center_writing_weights") else "")


def release_entry(name: str, raw: dict) -> dict:
    """One release of the yaml as the table stores it."""
    layout = raw.get("conversion_func") or "saelens"
    overrides = raw.get("config_overrides") or {}
    entry = {"repo_id": raw["repo_id"],
             "model": MODEL_ALIASES.get(raw["model"], raw["model"]), "layout": layout}
    if raw["model"] != entry["model"]:
        entry["saelens_model"] = raw["model"]
    if overrides:
        entry["config_overrides"] = overrides
    if note := _note(name, overrides):
        entry["note"] = note
    if name in RUN_ON:
        entry["run_on"] = RUN_ON[name]
    if prefix := path_prefix(raw["saes"]):
        entry["path_prefix"] = prefix
    entry["saes"] = [_row(layout, name, raw["repo_id"], s, prefix) for s in raw["saes"]]
    return entry


def sparsify_smollm() -> dict:
    """EleutherAI's SmolLM2 MLP SAEs: a sparsify repo, not in SAELens's table."""
    return {"repo_id": SMOLLM_SPARSIFY, "model": "HuggingFaceTB/SmolLM2-135M",
            "layout": "sparsify", "note": NOTES[SMOLLM_SPARSIFY],
            "run_on": RUN_ON[SMOLLM_SPARSIFY],
            "saes": [[f"layers.{i}.mlp", "", f"layers.{i}.mlp"] for i in range(30)]}


def build_table(releases: dict) -> dict:
    """The whole table: every release of the yaml, in its order, then the extras."""
    table = {name: release_entry(name, raw) for name, raw in releases.items()}
    table[SMOLLM_SPARSIFY] = sparsify_smollm()
    return table


def dumps(table: dict, source: str) -> str:
    """Compact JSON, one line per SAE (so a diff shows which SAEs changed)."""
    import json

    def one(value) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    blocks = []
    for name, entry in table.items():
        head = one({k: v for k, v in entry.items() if k != "saes"})[:-1]
        saes = ",\n".join(one(s) for s in entry["saes"])
        blocks.append(f'{one(name)}:{head},"saes":[\n{saes}]}}')
    return (f'{{"source":{one(source)},"columns":{one(COLUMNS)},"releases":{{\n'
            + ",\n".join(blocks) + "}}\n")


def read_yaml(wheel: Path | None, yaml_path: Path | None) -> dict:
    if yaml_path is not None:
        return yaml.safe_load(yaml_path.read_text())
    if wheel is None:
        tmp = Path(tempfile.mkdtemp(prefix="sae-lens-"))
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(tmp), f"sae-lens=={SAE_LENS_VERSION}"], check=True)
        wheel = next(tmp.glob("sae_lens-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        return yaml.safe_load(zf.read(YAML_IN_WHEEL))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded sae-lens wheel")
    parser.add_argument("--yaml", type=Path, help="a pretrained_saes.yaml")
    parser.add_argument("--out", type=Path, default=TABLE_FILE)
    args = parser.parse_args(argv)
    table = build_table(read_yaml(args.wheel, args.yaml))
    text = dumps(table, f"sae-lens {SAE_LENS_VERSION} {YAML_IN_WHEEL}")
    write_text(args.out, text)
    n_saes = sum(len(e["saes"]) for e in table.values())
    print(f"wrote {args.out}: {len(table)} releases, {n_saes:,} SAEs, "
          f"{len(text.encode()):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
