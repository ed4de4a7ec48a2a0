"""Frozen configs. Never mutate one: use `dataclasses.replace`."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from .activations import OUTLIER_FACTOR, SITES, hookpoint_name
from .errors import check_number
from .precision import DEVICES

Architecture = Literal["topk", "relu", "batchtopk", "matryoshka"]
"""What our trainer makes; `batchtopk` and `matryoshka` are saved as `jumprelu` SAEs."""
Control = Literal["none", "random-init", "shuffled"]
"""The model a build runs through: the real one, or a control (model_controls.py)."""
SaeArchitecture = Literal["topk", "relu", "jumprelu"]
"""What an SAE can be: JumpReLU SAEs come only from the Hub (SAELens)."""


@dataclass(frozen=True)
class SaeConfig:
    d_in: int
    """Width of the activations the SAE reads (d_model for residual hookpoints)."""
    d_sae: int
    """Number of latents (features)."""
    architecture: SaeArchitecture = "topk"
    """`topk` keeps the k largest ReLU pre-activations; `relu` is a plain ReLU SAE;
    `jumprelu` keeps a pre-activation only above its latent's `threshold`."""
    k: int = 32
    """Active latents per token for `topk` (ignored by `relu` and `jumprelu`)."""
    hookpoint: str = ""
    """Our hookpoint name, e.g. `layers.12` (residual after block 12) or `layers.12.mlp`."""
    model_name: str = ""
    """The model whose activations the SAE was trained on."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec from the input before encoding (SAELens; some Hub SAEs do not)."""
    hookpoint_in: str = ""
    """A transcoder's input, e.g. `layers.12.mlp_in` (what block 12's MLP reads), when it
    predicts `hookpoint` (`layers.12.mlp`) from it; "" for an SAE, which reads `hookpoint`."""
    d_out: int | None = None
    """Width a transcoder writes (W_dec (d_sae, d_out), b_dec (d_out,)); None: d_in."""
    skip: bool = False
    """A transcoder with a linear skip connection: its prediction adds x @ W_skip.T,
    W_skip (d_out, d_in) (EleutherAI skip transcoders, Gemma Scope 2 `_affine`)."""

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0 or (self.d_out is not None and self.d_out <= 0):
            raise ValueError(f"d_in, d_sae and d_out must be positive, got {self.d_in}, "
                             f"{self.d_sae}, {self.d_out}")
        if not self.hookpoint_in and (self.skip or self.d_out is not None):
            raise ValueError("d_out and skip are for transcoders (set hookpoint_in)")
        if self.hookpoint_in and self.apply_b_dec_to_input:
            raise ValueError("a transcoder's b_dec is an output bias: set "
                             "apply_b_dec_to_input=False")
        if self.architecture not in ("topk", "relu", "jumprelu"):
            raise ValueError(f"unknown architecture {self.architecture!r}; "
                             "use 'topk', 'relu' or 'jumprelu'")
        if self.architecture == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..d_sae ({self.d_sae}), got {self.k}")

    @property
    def is_transcoder(self) -> bool:
        return bool(self.hookpoint_in)

    @property
    def reads(self) -> str:
        """The hookpoint whose activations this SAE or transcoder encodes."""
        return self.hookpoint_in or self.hookpoint

    @property
    def width_out(self) -> int:
        """Width of what it writes at `hookpoint` (its decoder rows)."""
        return self.d_out or self.d_in


@dataclass(frozen=True)
class Limit:
    """The values a number field takes: `lo` to `hi` (None: no upper bound), whole or not."""

    lo: float
    hi: float | None = None
    whole: bool = True

    def check(self, value: object, field: str, *, from_text: bool = False) -> float:
        """`value` checked (errors.check_number): an int when whole, else a float."""
        return check_number(value, field, self.lo, self.hi, whole=self.whole,
                            from_text=from_text)


TRAIN_LIMITS: dict[str, Limit] = {
    "expansion": Limit(1), "k": Limit(1), "batch_tokens": Limit(1), "lm_batch_tokens": Limit(1),
    "max_tokens": Limit(1), "resample_every": Limit(0)}
"""What `TrainConfig` accepts for these fields (its `__post_init__` checks them; a
`max_tokens` of None means one pass)."""
TRAIN_FORM_LIMITS: dict[str, Limit] = {
    "expansion": Limit(1, 64), "k": Limit(1, 512), "max_tokens": Limit(4_096, 10_000_000),
    "l1_coeff": Limit(1e-4, 10.0, whole=False)}
"""What a visitor of the app may ask for (the train form, the lab's sweep): narrower than
`TRAIN_LIMITS`, sized for the 2 CPU cores of the demo; the forms read their bounds here and
their defaults from `TrainConfig`."""


@dataclass(frozen=True)
class TrainConfig:
    expansion: int = 8
    """d_sae = expansion * d_in."""
    architecture: Architecture = "topk"
    """SAE architecture: topk and relu as in SaeConfig; batchtopk keeps the k x n largest
    pre-activations of a batch of n tokens (Bussmann et al. 2024), so tokens differ in L0, and
    is saved as a jumprelu SAE with the learned threshold; matryoshka is batchtopk trained on
    nested prefix losses (see matryoshka_prefixes)."""
    k: int = 32
    """Target number of active latents per token (topk; batchtopk and matryoshka on average)."""
    k_start: int | None = None
    """If set, k starts here and anneals linearly to `k` over `k_anneal_frac` of training."""
    k_anneal_frac: float = 0.3
    """Share of training steps over which k anneals from `k_start` to `k`."""
    lr: float = 1.5e-3
    """Adam learning rate; the loss is normalised by the batch variance, so one lr fits all
    layers. Halve it with the batch: 3e-3 suits batches of 4096."""
    decoder_lr_mult: float = 3.0
    """The decoder (W_dec, b_dec) learns at `lr` times this."""
    encoder_init_scale: float | None = None
    """Encoder rows start at this times the (unit) decoder rows; None: 0.5 for topk, 0.1 for
    relu. Smaller rows take larger relative Adam steps early (TopK A/B at layer 15, 262k
    tokens: held-out FVU 0.241 at 1.0, 0.229 at 0.5, 0.228 at 0.1 but 5% of latents never
    firing). A ReLU SAE at 1.0 starts with half its latents on (FVU 13 on the first batch)
    and ends at FVU 0.46 where 0.1 reaches 0.30 (l1 0.1)."""
    batch_tokens: int = 2048
    """Activations per SAE optimizer step. One pass gives few steps, so smaller batches train
    better (A/B at layer 15, 262k tokens: FVU 0.229 at 4096 and lr 3e-3, 0.224 at 2048 and
    1.5e-3, with 1.4% vs 0.2% of latents never firing on held-out tokens); below 2048 the
    per-step costs (Adam, decoder norm) grow (+26% time at 1024)."""
    lm_batch_tokens: int = 4096
    """LM tokens per forward pass (whole windows); each layer takes about
    lm_batch_tokens / batch_tokens SAE steps per forward."""
    max_tokens: int | None = 307_200
    """Train on at most this many LM tokens (whole batches, drawn at random from the corpus);
    None: one pass over all of it. 75 batches of 4,096 leave just over 300k activations per
    layer after position 0 and massive tokens are dropped."""
    shuffle_batches: int = 8
    """Mix activations of this many LM batches before SAE steps (0: train in corpus order)."""
    auxk_alpha: float = 1 / 32
    """Weight of the AuxK loss that revives dead latents (topk)."""
    dead_tokens: int = 50_000
    """A latent that has not fired for this many training tokens counts as dead for AuxK."""
    l1_coeff: float = 0.1
    """L1 penalty weight (relu), on activations times decoder norms, relative to the FVU loss.
    Layer 15, one pass over 262k tokens: 0.05 gives FVU 0.17 at L0 605, 0.1 gives 0.30 at
    L0 217; 1.0 and above leave L0 under 2 and FVU near 1."""
    l1_warmup_frac: float = 0.2
    """Share of steps over which the L1 weight ramps up from zero (relu)."""
    outlier_factor: float = OUTLIER_FACTOR
    """Drop tokens whose norm exceeds this many times the layer's median (massive activations)."""
    seed: int = 0
    """Seeds SAE init and corpus order."""
    bf16: bool = True
    """Run the LM forward under bf16 autocast and the SAE encoder matmul in bf16."""
    checkpoint_every: int = 20
    """Save a resumable checkpoint every this many LM batches (0: never)."""
    ghost_grads: bool = False
    """ReLU only: latents dead for dead_tokens also learn, through exp of their pre-activations,
    to explain what the live ones missed (Anthropic's ghost grads, Jan 2024), a loss scaled to
    the reconstruction loss of each token; an L1 SAE has no other way to revive a latent."""
    resample_every: int = 0
    """Every this many SAE steps (0: never) re-initialise dead latents on inputs drawn by their
    squared reconstruction error (Anthropic, Towards Monosemanticity): revives latents that
    AuxK or ghost grads cannot reach, any architecture."""
    matryoshka_prefixes: tuple[float, ...] = (0.0625, 0.25, 1.0)
    """Matryoshka: nested prefix sizes as fractions of d_sae (increasing, the last 1.0); the
    loss is the mean FVU of the reconstructions from the first m latents, so early latents
    learn general features on their own (Bussmann et al. 2025, Nabeshima 2024)."""

    def __post_init__(self) -> None:
        if self.architecture not in ("topk", "relu", "batchtopk", "matryoshka"):
            raise ValueError(f"unknown architecture {self.architecture!r}; use 'topk', 'relu', "
                             "'batchtopk' or 'matryoshka'")
        if self.ghost_grads and self.architecture != "relu":
            raise ValueError(f"ghost_grads works with architecture 'relu' only, not "
                             f"{self.architecture!r} (topk-style SAEs revive latents with AuxK)")
        p = self.matryoshka_prefixes
        if not p or p[-1] != 1.0 or p[0] <= 0 or any(a >= b for a, b in pairwise(p)):
            raise ValueError("matryoshka_prefixes must be increasing fractions of d_sae in (0, 1] "
                             f"ending at 1.0, got {','.join(map(str, p))}")
        for name, limit in TRAIN_LIMITS.items():
            if getattr(self, name) is not None:  # only max_tokens may be None
                limit.check(getattr(self, name), name)
        if self.k_start is not None and self.k_start < self.k:
            raise ValueError(f"k_start ({self.k_start}) must be >= k ({self.k})")
        if not (self.lr > 0 and self.decoder_lr_mult > 0 and self.encoder_scale() > 0):
            raise ValueError("lr, decoder_lr_mult and encoder_init_scale must be positive, got "
                             f"{self.lr}, {self.decoder_lr_mult}, {self.encoder_init_scale}")

    def sae_width(self, d_in: int) -> int:
        """d_sae of the SAEs trained on d_in-dimensional activations (the trainer's, and
        memory.py's estimate)."""
        return self.expansion * d_in

    def encoder_scale(self) -> float:
        if self.encoder_init_scale is not None:
            return self.encoder_init_scale
        return 0.1 if self.architecture == "relu" else 0.5


@dataclass(frozen=True)
class BuildConfig:
    """What an atlas is built from (`build_atlas`); the SAEs' training is `TrainConfig`."""

    model: str = "embedded"
    """'embedded' (SmolLM2-135M-Instruct, offline), a local folder or a Hub id."""
    corpus: str = "default"
    """'default' (assets/corpus.jsonl), a .txt/.jsonl file or a Hub dataset id."""
    layers: tuple[int, ...] | None = None
    """Layers that get an SAE (at each site), e.g. 0,5,12; None: all of them."""
    site: tuple[str, ...] = ("resid",)
    """Where each layer's SAE reads: resid (the residual stream after the block), mlp (the
    MLP output), attn (the attention output); several: resid,mlp."""
    seq_len: int = 256
    """Tokens per corpus window."""
    held_out: int = 64
    """Windows drawn at random and never trained on (evaluation, then the feature index)."""
    ce_windows: int = 32
    """Held-out windows the evaluation's CE loss and KL read (atlas/evaluate.py)."""
    control: Control = "none"
    """A control model in place of the real one (model_controls.py): random-init (every
    weight re-drawn by the model's initialiser, seeded by the training seed) or shuffled
    (each weight tensor's entries permuted): same recipe and tokens, so what its SAEs show
    too is about SAEs and token statistics, not about the trained model."""

    def __post_init__(self) -> None:
        if self.control not in ("none", "random-init", "shuffled"):
            raise ValueError(f"control must be none, random-init or shuffled, got "
                             f"{self.control!r}")
        if self.seq_len < 2 or self.held_out < 1 or self.ce_windows < 1:
            raise ValueError(f"seq_len must be >= 2, held_out and ce_windows >= 1, got "
                             f"{self.seq_len}, {self.held_out}, {self.ce_windows}")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise ValueError(f"layers must be non-negative layer numbers, got {self.layers}")
        if not self.site or len(set(self.site)) < len(self.site) or set(self.site) - set(SITES):
            raise ValueError(f"site must be distinct names among {', '.join(SITES)}, "
                             f"got {','.join(self.site)}")

    def hookpoints(self, n_layers: int) -> list[str]:
        """Every (site, layer) the build trains, site by site."""
        layers = range(n_layers) if self.layers is None else self.layers
        return [hookpoint_name(i, site) for site in self.site for i in layers]


Parallel = Literal["data", "layers"]


@dataclass(frozen=True)
class RunConfig:
    """Where a build runs; not part of what the atlas is (a build resumes on another device)."""

    device: str = "cpu"
    """auto, cpu, cuda (cuda:N) or mps: the LM, the SAEs and their training run there."""
    parallel: Parallel = "data"
    """Under torchrun: data (every rank trains every SAE on its share of each batch,
    gradients all-reduced) or layers (each rank trains its share of the hookpoints)."""

    def __post_init__(self) -> None:
        if self.device.split(":")[0] not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; use one of {', '.join(DEVICES)}")
        if self.parallel not in ("data", "layers"):
            raise ValueError(f"parallel must be 'data' or 'layers', got {self.parallel!r}")
