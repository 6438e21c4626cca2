"""A distilled policy generator: policy VAE + conditional latent diffusion.

A :class:`Generator` samples policies for requested measures (behaviour descriptors), or for
text descriptions when it was distilled with ``--condition text`` or ``both``::

    import jax, zoo
    gen = zoo.load_generator("walker2d-uni-ldm")            # catalog name, repo id or directory
    policies = gen.sample(jax.random.key(0), measures=[[0.2, 0.8], [0.9, 0.1]], num_samples=4)
    result = gen.make_task().evaluate(policies, jax.random.key(1))   # 8 policies
    text_gen.sample(jax.random.key(0), text=["hop forward on the left foot"], num_samples=4)

Conditions (``config["conditions"]``, ``["measures"]`` when absent): ``"measures"`` (the
:class:`~models.denoiser.MeasureEncoder`), ``"text"`` (the frozen all-MiniLM-L6-v2 sentence
embedding of the prompt, :class:`zoo.text_encoder.TextEncoder`, through the trainable
:class:`~models.denoiser.TextConditionEncoder`) or both; with both, the measure tokens come
first, then the text tokens, and a modality that is not given is replaced by its slice of the
learned null condition (training dropped each one independently), so either can be given
alone. The sentence encoder is identified in ``config["text_encoder"]`` (package, version,
sha256 of its weights), never stored.

Sampling: the measures ``[n, k]`` are normalised to ``[0, 1]`` by the descriptor bounds of the
source archive and encoded into condition tokens (:class:`~models.denoiser.MeasureEncoder`);
the denoiser (:class:`~models.denoiser.ConditionalDenoiser`) turns Gaussian noise into a
latent with DDIM, DDPM or the probability-flow ODE (:mod:`models.diffusion`), optionally with
classifier-free guidance; the latent, divided by ``latent_scale``, is decoded into an
:class:`~models.policy.MLPPolicy` by the VAE (:class:`~models.policy_vae.PolicyVAE`). The
whole path is one compiled function per (sampler, steps, batch size); decoded parameters are
checked for NaN and infinity before anything is returned.

The directory layout (``config.json``, ``vae/``, ``denoiser/``, ``condition_encoder/``,
``README.md``) is documented in ``docs/FORMAT.md`` ("Generator"). How generators are trained
lives in :mod:`training.distill.run`; this module only reads their config.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from hub_cards import TOUR_NAME
from models.denoiser import ConditionalDenoiser, MeasureEncoder, TextConditionEncoder
from models.diffusion import (
    DiffusionSchedule,
    classifier_free_guidance,
    cosine_schedule,
    ddim_sample,
    ddpm_sample,
    linear_schedule,
    ode_sample,
)
from models.policy import MLPPolicy, PolicySpec
from models.policy_vae import PolicyVAE, count_parameters
from zoo.artifact import POLICY_FIELDS, TASK_FIELDS, Artifact
from zoo.errors import (
    ArtifactError,
    ChecksumError,
    ConditionError,
    ConfigError,
    FormatVersionError,
    NonFiniteError,
    ShapeError,
    TaskMismatchError,
    UnknownNameError,
)
from zoo.evaluation import GENOME_DTYPES, round_genomes
from zoo.serialization import (
    FIX_LOADED,
    Field,
    arrays_to_tree,
    leaf_name,
    load_arrays,
    read_json,
    tree_to_arrays,
    write_json,
)
from zoo.tasks.base import Task

__all__ = [
    "ARTIFACT_FILES",
    "FORMAT_VERSION",
    "CONDITIONS",
    "SAMPLERS",
    "Generator",
    "condition_tokens",
    "config_conditions",
    "encode_means",
    "load_generator",
    "load_text_encoder",
    "measure_encoder_config",
    "text_encoder_identity",
    "text_prompts",
]

FORMAT_VERSION = 3
"""Version 2: the decoder's basis heads take the latent and start from the archive's principal
directions, and the encoder projects each layer on them (``PolicyVAE.with_archive_basis``);
the measure encoder can see Fourier features of the measures (``frequencies``). Version 3
adds text conditions (``conditions``, ``text_encoder``, ``text_condition_encoder/``); a
generator conditioned on measures alone is still written as version 2 (older qdzoo reads it)."""
MEASURES_ONLY_FORMAT_VERSION = 2
"""The version written for a generator conditioned on measures alone."""
OLDEST_READABLE_VERSION = 2
"""Version 1 generators came from development versions before the first release: their
decoder's basis heads had another layout, so their weights cannot be read into version 2."""
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
METRICS_LOG = "metrics.jsonl"
WEIGHTS_NAME = "model.safetensors"
COMPONENTS = ("vae", "denoiser", "condition_encoder", "text_condition_encoder")
"""Sub-folders of a generator directory, each ``config.json`` + ``model.safetensors``
(``condition_encoder/`` with measure conditions, ``text_condition_encoder/`` with text)."""
CONDITIONS = ("measures", "text")
"""The kinds of condition a generator can accept (``config["conditions"]``)."""
ARTIFACT_FILES = (
    CONFIG_NAME,
    CARD_NAME,
    METRICS_LOG,
    TOUR_NAME,
    *(f"{c}/{name}" for c in COMPONENTS for name in (CONFIG_NAME, WEIGHTS_NAME)),
)
"""The files of a generator directory that are published when present (``checkpoint/`` is
not; the images listed in ``config["images"]`` are, too)."""

SAMPLERS = ("ddim", "ddpm", "ode")
"""Sampler names :meth:`Generator.sample` accepts."""
DEFAULT_STEPS = {"ddim": 100, "ode": 9}
"""Default steps: DDIM 100; ODE 9 Heun steps = 19 denoiser evaluations (2 per step + the
final step to ``x_0``). DDPM always takes all ``T`` steps."""
ODE_RHO = 50.0
"""Spacing of the ODE sampler's noise levels (uniform in ``sigma ** (1 / rho)``): nearly
log-uniform. The cosine schedule's largest ``sigma = sqrt((1 - abar) / abar)`` is ~1e4, and
the usual ``rho = 7`` spends most of a short grid above ``sigma = 100``, where the latent is
pure noise; with ``rho = 50`` 9 Heun steps land as close to the archive's latents as DDIM with
100 steps."""
DECODE_BATCH = 64
"""Latents decoded at once inside the compiled sampler (bounds the decoder's memory)."""
BOUNDS_TOLERANCE = 1e-6
"""Relative slack (of the bound range) before a measure counts as outside the bounds."""

_SCHEDULES = {"cosine": cosine_schedule, "linear": linear_schedule}


# ------------------------------------------------------------------------------ helpers


def measure_encoder_config(encoder: MeasureEncoder) -> dict[str, int]:
    """Keyword arguments that rebuild ``encoder``: ``MeasureEncoder(key=k, **config)``."""
    frequencies = int(encoder.frequencies)
    return {
        "measure_size": int(encoder.measure_size),
        "num_tokens": int(encoder.num_tokens),
        "token_size": int(encoder.token_size),
        "width": int(encoder.mlp.width_size),
        "frequencies": frequencies,
    }


def make_schedule(diffusion: Mapping[str, Any]) -> DiffusionSchedule:
    """The noise schedule described by ``config["diffusion"]`` (``schedule``, ``num_timesteps``)."""
    name = diffusion.get("schedule", "cosine")
    if name not in _SCHEDULES:
        raise UnknownNameError("diffusion schedule", name, _SCHEDULES)
    return _SCHEDULES[name](int(diffusion["num_timesteps"]))


def _jsonable(value: Any) -> Any:
    """Tuples to lists, recursively (what a JSON round trip does)."""
    return json.loads(json.dumps(value))


def _vae_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = dict(config)
    if "cnn_channels" in kwargs:
        kwargs["cnn_channels"] = tuple(kwargs["cnn_channels"])
    return kwargs


def config_conditions(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The conditions a generator config accepts (``("measures",)`` when it names none)."""
    return tuple(config.get("conditions") or ("measures",))


def _components(conditions: Sequence[str]) -> tuple[str, ...]:
    """The sub-folders of a generator accepting ``conditions``."""
    return (
        "vae",
        "denoiser",
        *(("condition_encoder",) if "measures" in conditions else ()),
        *(("text_condition_encoder",) if "text" in conditions else ()),
    )


def _build_skeletons(config: Mapping[str, Any]) -> dict[str, Any]:
    """Shape-only modules (``jax.ShapeDtypeStruct`` leaves) built from a generator config,
    by sub-folder (:func:`_components`)."""
    spec = PolicySpec.from_dict(config["policy"])
    key = jax.random.key(0)
    builders: dict[str, Callable[[PRNGKeyArray], Any]] = {
        "vae": lambda k: PolicyVAE(spec, key=k, **_vae_kwargs(config["vae"])),
        "denoiser": lambda k: ConditionalDenoiser(key=k, **config["denoiser"]),
        "condition_encoder": lambda k: MeasureEncoder(key=k, **config["condition_encoder"]),
        "text_condition_encoder": lambda k: TextConditionEncoder(
            key=k, **config["text_condition_encoder"]
        ),
    }
    return {
        folder: eqx.filter_eval_shape(builders[folder], key)
        for folder in _components(config_conditions(config))
    }


def _module_arrays(module: Any) -> dict[str, np.ndarray]:
    """The arrays of an Equinox module, named by their paths."""
    return tree_to_arrays(eqx.filter(module, eqx.is_array))


def _fill_module(skeleton: Any, arrays: dict[str, np.ndarray], what: str) -> Any:
    """``skeleton`` (from :func:`_build_skeletons`) with its arrays read from ``arrays``.

    Raises:
        ArtifactError: ``arrays`` lacks an array of the skeleton or holds one it does not have.
        ShapeError: an array's shape differs from the skeleton's.
    """
    dynamic, static = eqx.partition(skeleton, lambda x: isinstance(x, jax.ShapeDtypeStruct))
    expected = {leaf_name("", path) for path, _ in jax.tree_util.tree_flatten_with_path(dynamic)[0]}
    unexpected = sorted(set(arrays) - expected)
    if unexpected:
        raise ArtifactError(
            f"{what} holds arrays the config does not describe ({', '.join(unexpected[:5])}"
            f"{', ...' if len(unexpected) > 5 else ''}); it was written for another architecture"
        )
    return eqx.combine(arrays_to_tree(dynamic, arrays), static)


def _finite_rows(tree: Any) -> Bool[Array, " batch"]:
    """Per row of a population: whether every array leaf is finite."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if eqx.is_inexact_array(x)]
    flags = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]
    return jnp.stack(flags).all(axis=0)


@eqx.filter_jit
def _decode(vae: PolicyVAE, z: Float[Array, "batch latent"]) -> tuple[MLPPolicy, Array]:
    """Decode ``z`` in batches of :data:`DECODE_BATCH`; also per-policy finiteness."""
    policies = jax.lax.map(vae.decode, z, batch_size=DECODE_BATCH)
    return policies, _finite_rows(policies)


@eqx.filter_jit
def encode_means(vae: PolicyVAE, policies: MLPPolicy) -> Float[Array, "batch latent"]:
    """Posterior means ``[batch, latent]`` of a population ``[batch, ...]`` (compiled, in
    batches of :data:`DECODE_BATCH`)."""
    return jax.lax.map(lambda p: vae.encode(p)[0], policies, batch_size=DECODE_BATCH)


def clipped_eps_fn(
    eps_fn: Callable[[Array, Array, Any], Array],
    schedule: DiffusionSchedule,
    clip_x0: Float[Array, ""],
) -> Callable[[Array, Array, Any], Array]:
    """``eps_fn`` whose implied clean sample ``x0 = (x - sqrt(1 - abar) eps) / sqrt(abar)``
    is clipped to ``[-clip_x0, clip_x0]`` (the noise is recomputed to match).

    Near the last step of a cosine schedule ``abar`` is ~1e-8, so a small error of the
    predicted noise becomes an error ``1e4`` times larger in ``x0``, which DDIM, DDPM and the
    ODE carry to the end. Clipping ``x0`` to the range of the training latents (as image
    diffusion clips to ``[-1, 1]``) removes it and leaves accurate predictions untouched:
    where nothing is clipped the noise is returned unchanged.
    """

    def clipped(x: Array, t: Array, condition: Any) -> Array:
        eps = eps_fn(x, t, condition)
        abar = schedule.alpha_bar_at(jnp.asarray(t, jnp.float32))
        abar = abar.reshape(abar.shape + (1,) * (x.ndim - abar.ndim))
        x0 = (x - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
        excess = x0 - jnp.clip(x0, -clip_x0, clip_x0)
        return eps + jnp.sqrt(abar / (1.0 - abar)) * excess

    return clipped


def condition_tokens(
    denoiser: ConditionalDenoiser,
    measure_encoder: MeasureEncoder | None,
    text_encoder: TextConditionEncoder | None,
    measures: Float[Array, "batch k"] | None,
    text: Float[Array, "batch embedding"] | None,
    *,
    keep_measures: Bool[Array, " batch"] | None = None,
    keep_text: Bool[Array, " batch"] | None = None,
) -> Float[Array, "batch tokens condition"]:
    """The condition tokens of a batch: the measure tokens, then the text tokens, of the
    encoders the generator has (``None``: it has none of that kind).

    A modality whose input is ``None``, or a row whose ``keep_*`` is ``False`` (condition
    dropout in training), gets that modality's slice of ``denoiser.null_condition`` (the
    measure slice first, then the text slice). With one encoder and no ``keep_*`` this is
    just that encoder applied to every row.
    """
    given = measures if measures is not None else text
    if given is None:
        raise ValueError("condition_tokens needs measures or text")
    batch = given.shape[0]
    parts = []
    offset = 0
    for encoder, inputs, keep in (
        (measure_encoder, measures, keep_measures),
        (text_encoder, text, keep_text),
    ):
        if encoder is None:
            continue
        null = denoiser.null_condition[offset : offset + encoder.num_tokens]
        offset += encoder.num_tokens
        if inputs is None:
            parts.append(jnp.broadcast_to(null, (batch, *null.shape)))
            continue
        tokens = jax.vmap(encoder)(inputs)
        if keep is not None:
            tokens = jnp.where(keep[:, None, None], tokens, null)
        parts.append(tokens)
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


@eqx.filter_jit
def _sample_latents(
    denoiser: ConditionalDenoiser,
    encoder: MeasureEncoder | None,
    text_encoder: TextConditionEncoder | None,
    schedule: DiffusionSchedule,
    key: PRNGKeyArray,
    conditions: Float[Array, "batch k"] | None,
    text: Float[Array, "batch embedding"] | None,
    latent_scale: Float[Array, ""],
    clip_x0: Float[Array, ""],
    guidance: Float[Array, ""] | None,
    sampler: str,
    steps: int,
) -> Float[Array, "batch latent"]:
    """Latents (in the VAE's space, i.e. divided by ``latent_scale``) for ``conditions``
    normalised to ``[0, 1]`` and/or sentence embeddings ``text`` (:func:`condition_tokens`);
    ``guidance=None`` is the plain conditional prediction; ``clip_x0`` bounds the implied
    clean scaled latent (``inf``: no bound)."""
    tokens = condition_tokens(denoiser, encoder, text_encoder, conditions, text)
    shape = (tokens.shape[0], denoiser.latent_size)
    eps_fn = denoiser.batched
    if guidance is not None:
        eps_fn = classifier_free_guidance(eps_fn, denoiser.null_condition, guidance)
    eps_fn = clipped_eps_fn(eps_fn, schedule, clip_x0)
    if sampler == "ddim":
        x = ddim_sample(eps_fn, schedule, key, shape, tokens, num_steps=steps)
    elif sampler == "ddpm":
        x = ddpm_sample(eps_fn, schedule, key, shape, tokens)
    else:
        x = ode_sample(eps_fn, schedule, key, shape, tokens, num_steps=steps, rho=ODE_RHO).samples
    return x / latent_scale


# ---------------------------------------------------------------------------- generator


WEIGHTS_DTYPES = GENOME_DTYPES
"""How a generator's floating-point weights may be stored (``config["weights_dtype"]``; absent:
float32), as an archive's genomes. They are float32 in memory either way."""


def is_float32(x: Any) -> bool:
    """The leaves a ``weights_dtype`` applies to (integer arrays are stored as they are)."""
    return eqx.is_array_like(x) and getattr(x, "dtype", None) == np.float32


CONFIG_FIELDS: tuple[Field, ...] = (
    *TASK_FIELDS,
    *POLICY_FIELDS,
    Field("policy", "dict"),
    Field("descriptors", "dict"),
    Field("descriptors.names", "list[str]"),
    Field("descriptors.low", "list[number]"),
    Field("descriptors.high", "list[number]"),
    Field("diffusion", "dict"),
    Field("diffusion.schedule", "str"),
    Field("diffusion.num_timesteps", "positive int"),
    Field("diffusion.clip_x0", "finite number", nullable=True, optional=True),
    Field("latent_scale", "finite number"),
    Field("vae", "dict"),
    Field("denoiser", "dict"),
    Field("condition_encoder", "dict", optional=True),
    Field("conditions", "list[str]", optional=True),
    Field("text_condition_encoder", "dict", optional=True),
    Field("text_encoder", "dict", optional=True),
    Field("text_encoder.package", "str", optional=True),
    Field("text_encoder.version", "str", optional=True),
    Field("text_encoder.sha256", "str", optional=True),
    Field("weights_dtype", "str", optional=True, choices=WEIGHTS_DTYPES),
)
"""The schema of a generator's ``config.json`` (``docs/FORMAT.md``), checked on save and load."""


def as_key(key: Any) -> PRNGKeyArray:
    """A PRNG key from ``key``: a key as is, an integer as the seed of ``jax.random.key``.

    Raises:
        ConfigError: anything else (says how to make a key).
    """
    if isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and key.shape == ():
        return key
    if dtype == jnp.uint32 and getattr(key, "shape", None) == (2,):  # jax.random.PRNGKey(seed)
        return key
    raise ConfigError(
        f"key must be a JAX PRNG key or an integer seed, got {type(key).__name__} "
        f"{key!r:.60}; pass e.g. jax.random.key(0) (split it for several calls) or 0"
    )


class Generator(Artifact):
    """A policy VAE, a conditional latent denoiser and its condition encoders, with their
    config.

    Build one with :func:`load_generator` (or :meth:`from_pretrained`) or by distilling an
    archive (:func:`training.distill.distill`).

    Attributes:
        vae: :class:`~models.policy_vae.PolicyVAE` (decodes latents ``[latent]`` to policies).
        denoiser: :class:`~models.denoiser.ConditionalDenoiser` (epsilon prediction on scaled
            latents).
        measure_encoder: :class:`~models.denoiser.MeasureEncoder` (measures normalised to
            ``[0, 1]``, ``[k]`` -> condition tokens); ``None`` when it takes text alone.
        text_condition_encoder: :class:`~models.denoiser.TextConditionEncoder` (a sentence
            embedding -> condition tokens); ``None`` when it takes measures alone.
        schedule: the :class:`~models.diffusion.DiffusionSchedule` the denoiser was trained on.
        latent_scale: the denoiser sees VAE latents multiplied by it (1 / std of the encoded
            archive).
        config: the JSON-able config (see ``docs/FORMAT.md``): task, policy spec,
            descriptors, architecture, diffusion, training, metrics, source archive.
        path: the directory this generator was loaded from or last saved to (``None`` for a
            fresh one); images listed in the config are copied from it when saving elsewhere.
    """

    kind: ClassVar[str] = "generator"
    format_version: ClassVar[int] = FORMAT_VERSION
    written_by: ClassVar[str] = "Generator.save_pretrained or `qdzoo distill`"
    description: ClassVar[str] = "policy generator"
    published_files: ClassVar[tuple[str, ...]] = ARTIFACT_FILES
    config_fields: ClassVar[tuple[Field, ...]] = CONFIG_FIELDS

    def __init__(
        self,
        vae: PolicyVAE,
        denoiser: ConditionalDenoiser,
        measure_encoder: MeasureEncoder | None,
        schedule: DiffusionSchedule,
        latent_scale: float,
        config: Mapping[str, Any],
        *,
        text_condition_encoder: TextConditionEncoder | None = None,
    ) -> None:
        """Assemble a generator; architecture entries of ``config`` (and ``conditions``) are
        (re)written from the modules, and ``config`` must hold ``task``, ``policy`` and
        ``descriptors`` (and ``text_encoder``, the sentence encoder's identity, with a
        ``text_condition_encoder``).

        Raises:
            ConfigError: a missing config section, a policy spec that is not the VAE's,
                descriptor bounds that do not match the measure encoder, no condition
                encoder, or condition encoders whose tokens do not match the denoiser's.
        """
        config = dict(config)
        for section in ("task", "policy", "descriptors"):
            if section not in config:
                raise ConfigError(
                    f"a generator config needs a {section!r} section (task, policy spec, "
                    "descriptor names/low/high); distill one with training.distill.run"
                )
        if PolicySpec.from_dict(config["policy"]) != vae.spec:
            raise ConfigError(
                f"config['policy'] ({config['policy']}) is not the VAE's policy spec "
                f"({vae.spec.to_dict()})"
            )
        descriptors = config["descriptors"]
        k = len(descriptors["names"])
        if not (len(descriptors["low"]) == len(descriptors["high"]) == k):
            raise ConfigError(
                f"descriptors: {k} names but {len(descriptors['low'])} low and "
                f"{len(descriptors['high'])} high bounds"
            )
        if measure_encoder is None and text_condition_encoder is None:
            raise ConfigError(
                "a generator needs a measure encoder, a text condition encoder or both; "
                "distill one with training.distill.run"
            )
        if text_condition_encoder is not None and not isinstance(config.get("text_encoder"), dict):
            raise ConfigError(
                "a text-conditioned generator's config needs a 'text_encoder' section (package, "
                "version and sha256 of the sentence encoder's weights)"
            )
        encoders = [e for e in (measure_encoder, text_condition_encoder) if e is not None]
        tokens = sum(e.num_tokens for e in encoders)
        null = tuple(denoiser.null_condition.shape)
        if null != (tokens, encoders[0].token_size) or any(
            e.token_size != encoders[0].token_size for e in encoders
        ):
            raise ConfigError(
                f"the denoiser's null condition is {null} but the condition encoders emit "
                f"{[(e.num_tokens, e.token_size) for e in encoders]} tokens; they were not "
                "trained together"
            )
        if measure_encoder is not None and measure_encoder.measure_size != k:
            raise ConfigError(
                f"the measure encoder takes {measure_encoder.measure_size} measures but the "
                f"config names {k} descriptors ({', '.join(descriptors['names'])})"
            )
        if not (math.isfinite(latent_scale) and latent_scale > 0):
            raise ConfigError(f"latent_scale must be a finite positive number, got {latent_scale}")
        self.vae = vae
        self.denoiser = denoiser
        self.measure_encoder = measure_encoder
        self.text_condition_encoder = text_condition_encoder
        self.schedule = schedule
        self.latent_scale = float(latent_scale)
        encoders_by_kind = (measure_encoder, text_condition_encoder)
        diffusion = dict(config.get("diffusion", {}))
        diffusion.setdefault("schedule", "cosine")
        diffusion.setdefault("prediction", "epsilon")
        diffusion["num_timesteps"] = schedule.num_timesteps
        config.update(
            vae=_jsonable(vae.config),
            denoiser=_jsonable(denoiser.config),
            diffusion=diffusion,
            latent_scale=self.latent_scale,
            conditions=[
                name for name, e in zip(CONDITIONS, encoders_by_kind, strict=True) if e is not None
            ],
        )
        config.pop("condition_encoder", None)
        config.pop("text_condition_encoder", None)
        if measure_encoder is not None:
            config["condition_encoder"] = measure_encoder_config(measure_encoder)
        if text_condition_encoder is not None:
            config["text_condition_encoder"] = text_condition_encoder.config
        else:
            config.pop("text_encoder", None)
        config.setdefault("metrics", {})
        config.setdefault("images", [])
        self.config: dict[str, Any] = config
        self.path: Path | None = None

    # ------------------------------------------------------------------------- accessors
    @property
    def policy_spec(self) -> PolicySpec:
        """The spec of every policy this generator emits."""
        return PolicySpec.from_dict(self.config["policy"])

    @property
    def descriptor_names(self) -> tuple[str, ...]:
        return tuple(self.config["descriptors"]["names"])

    @property
    def descriptor_low(self) -> np.ndarray:
        """Lower descriptor bounds ``[k]`` (the source archive's)."""
        return np.asarray(self.config["descriptors"]["low"], dtype=np.float64)

    @property
    def descriptor_high(self) -> np.ndarray:
        """Upper descriptor bounds ``[k]`` (the source archive's)."""
        return np.asarray(self.config["descriptors"]["high"], dtype=np.float64)

    @property
    def clip_x0(self) -> float:
        """Bound on the denoiser's implied clean scaled latent while sampling
        (``config["diffusion"]["clip_x0"]``; ``inf`` when absent); see :func:`clipped_eps_fn`."""
        value = self.config["diffusion"].get("clip_x0")
        return math.inf if value is None else float(value)

    @property
    def measure_size(self) -> int:
        return len(self.config["descriptors"]["names"])

    @property
    def conditions(self) -> tuple[str, ...]:
        """The conditions :meth:`sample` accepts: ``("measures",)``, ``("text",)`` or
        ``("measures", "text")`` (either alone, or both)."""
        return config_conditions(self.config)

    def num_parameters(self) -> dict[str, int]:
        """Scalars per part: ``vae_encoder``, ``vae_decoder``, ``denoiser``,
        ``condition_encoder`` (the measure and text condition encoders together; archive
        statistics count with the decoder; the frozen sentence encoder is not counted)."""
        stats = 0 if self.vae.archive_mean is None else 2 * self.vae.archive_mean.size
        encoders = [e for e in (self.measure_encoder, self.text_condition_encoder) if e is not None]
        return {
            "vae_encoder": count_parameters(self.vae.encoder),
            "vae_decoder": count_parameters(self.vae.decoder) + stats,
            "denoiser": count_parameters(self.denoiser),
            "condition_encoder": sum(count_parameters(e) for e in encoders),
        }

    def check_task(self, task: Task, *, ignore: Sequence[str] = ("episode_length",)) -> None:
        """Raise :class:`TaskMismatchError` unless ``task`` is the one this generator was
        trained for: same name, same constructor arguments (except those in ``ignore``:
        rolling the same policies out for longer is fine) and policies of the right sizes.
        """
        mine = self.config["task"]
        theirs = task.spec
        differing = sorted(
            k
            for k in set(mine["kwargs"]) | set(theirs.kwargs)
            if k not in ignore
            and _jsonable(mine["kwargs"].get(k)) != _jsonable(theirs.kwargs.get(k))
        )
        policy = self.policy_spec
        sizes_differ = theirs.genome != "policy" or (
            theirs.observation_size,
            theirs.action_size,
        ) != (policy.observation_size, policy.action_size)
        if mine["name"] != theirs.name or differing or sizes_differ:
            why = []
            if mine["name"] != theirs.name:
                why.append("the task names differ")
            if differing:
                why.append(f"the arguments {differing} differ")
            if sizes_differ:
                why.append(
                    f"the generator emits {policy.observation_size} -> "
                    f"{policy.action_size} policies, the task needs "
                    f"{theirs.observation_size} -> {theirs.action_size}"
                )
            raise TaskMismatchError(
                f"this generator was trained for task {mine['name']!r} with "
                f"{json.dumps(mine['kwargs'], sort_keys=True)}, not for task {theirs.name!r} with "
                f"{json.dumps(theirs.kwargs, sort_keys=True)} ({'; '.join(why)}); build the task "
                "with generator.make_task()"
            )

    def __repr__(self) -> str:
        spec = self.policy_spec
        layers = " -> ".join(map(str, spec.layer_sizes))
        return (
            f"Generator(task={self.config['task']['name']!r}, policy={layers}, "
            f"measures={list(self.descriptor_names)}, conditions={list(self.conditions)}, "
            f"latent={self.vae.latent_size}, T={self.schedule.num_timesteps})"
        )

    # -------------------------------------------------------------------------- sampling
    def normalise_measures(
        self, measures: ArrayLike, *, clip: bool = False
    ) -> Float[np.ndarray, "n k"]:
        """Check measures ``[n, k]`` or ``[k]`` and map them to ``[0, 1]`` by the bounds.

        Raises:
            ShapeError: not ``[k]`` or ``[n, k]`` with ``k`` the descriptor size.
            ConfigError: non-finite measures, or measures outside the descriptor bounds
                (unless ``clip``, which clips them to the bounds).
        """
        try:
            values = np.array(measures, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ShapeError(
                f"measures must be numbers shaped [n, {self.measure_size}] or "
                f"[{self.measure_size}] ({err})"
            ) from err
        if values.ndim == 1:
            values = values[None, :]
        k = self.measure_size
        names = ", ".join(self.descriptor_names)
        if values.ndim != 2 or values.shape[1] != k or values.shape[0] < 1:
            raise ShapeError(
                f"measures must have shape [n, {k}] or [{k}] (one value per descriptor: "
                f"{names}), got shape {np.shape(measures)}"
            )
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"measures must be finite numbers, got {values.tolist()}")
        low, high = self.descriptor_low, self.descriptor_high
        slack = BOUNDS_TOLERANCE * (high - low)
        outside = np.any((values < low - slack) | (values > high + slack), axis=1)
        if np.any(outside) and not clip:
            rows = np.flatnonzero(outside)
            bounds = ", ".join(
                f"{n} in [{lo:g}, {hi:g}]"
                for n, lo, hi in zip(self.descriptor_names, low, high, strict=True)
            )
            raise ConfigError(
                f"{rows.size} of {values.shape[0]} requested measures lie outside the "
                f"descriptor bounds ({bounds}), first row {int(rows[0])}: "
                f"{values[rows[0]].tolist()}; request measures inside the bounds or pass "
                "clip=True to clip them"
            )
        values = np.clip(values, low, high)
        return ((values - low) / (high - low)).astype(np.float32)

    def embed_text(self, text: str | Sequence[str]) -> Float[Array, "n embedding"]:
        """The frozen sentence encoder's unit-norm embeddings ``[n, embedding]`` of prompts.

        The encoder (all-MiniLM-L6-v2, :class:`zoo.text_encoder.TextEncoder`) is loaded once
        per process from qdzoo's cache and its weights checked against the sha256 recorded
        in ``config["text_encoder"]``.

        Raises:
            ConditionError: this generator does not take text.
            ConfigError: not a string or a non-empty list of non-empty strings.
            MissingTextEncoderError: the encoder is not set up (``qdzoo text-setup``).
            ChecksumError: the encoder's weights are not the ones the generator was trained
                with.
        """
        if "text" not in self.conditions:
            raise ConditionError(self._condition_message("text"))
        texts = text_prompts(text)
        encoder = load_text_encoder(self.config["text_encoder"])
        return encoder.encode(texts)

    def _condition_message(self, given: str) -> str:
        """Why a request of the ``given`` kind (``"text"``, ``"measures"``, ``"none"``) is
        refused, and how to fix it."""
        accepted = self.conditions
        names = ", ".join(self.descriptor_names)
        how = {
            "measures": f"measures=[[...]] with {self.measure_size} numbers per condition "
            f"({names}) (`--measures` in the CLI)",
            "text": 'text=["hop forward on the left foot"] (`--text` in the CLI)',
        }
        accepts = " or ".join(f"{c} ({how[c]})" for c in accepted)
        if given == "none":
            return f"this generator needs a condition: pass {accepts}"
        other = "measures" if given == "text" else "text"
        distil = f"distil a generator with `qdzoo distill ARCHIVE --condition {given}` (or both)"
        if other not in accepted:  # pragma: no cover - a generator accepts something
            return f"this generator does not take {given}; {distil}"
        return (
            f"this generator was distilled to take {' and '.join(accepted)} "
            f"(conditions {list(accepted)}), not {given}: pass {accepts} instead, or {distil}"
        )

    def _request(
        self, measures: ArrayLike | None, text: str | Sequence[str] | None, clip: bool
    ) -> tuple[np.ndarray | None, Array | None]:
        """Checked conditions: ``[n, k]`` normalised measures and ``[n, embedding]`` text
        embeddings, each ``None`` when not given (one given alone is broadcast over the
        other's rows when it has one row)."""
        accepted = self.conditions
        if measures is None and text is None:
            raise ConditionError(self._condition_message("none"))
        for kind, value in (("measures", measures), ("text", text)):
            if value is not None and kind not in accepted:
                raise ConditionError(self._condition_message(kind))
        conditions = None if measures is None else self.normalise_measures(measures, clip=clip)
        embeddings = None if text is None else self.embed_text(text)
        if conditions is not None and embeddings is not None:
            n_m, n_t = conditions.shape[0], embeddings.shape[0]
            if n_m != n_t and 1 not in (n_m, n_t):
                raise ShapeError(
                    f"measures and text must describe the same conditions, one row of measures "
                    f"per prompt; given {n_m} rows of measures and {n_t} prompts (pass one "
                    "of either to pair it with every row of the other)"
                )
            n = max(n_m, n_t)
            conditions = np.repeat(conditions, n // n_m, axis=0)
            embeddings = jnp.repeat(embeddings, n // n_t, axis=0)
        return conditions, embeddings

    def sample_latents(
        self,
        key: PRNGKeyArray | int,
        measures: ArrayLike | None = None,
        num_samples: int = 1,
        *,
        text: str | Sequence[str] | None = None,
        sampler: str = "ddim",
        steps: int | None = None,
        guidance: float = 1.0,
        clip: bool = False,
    ) -> Float[Array, "batch latent"]:
        """VAE latents ``[n * num_samples, latent]`` for measures ``[n, k]`` (or ``[k]``)
        and/or ``n`` text prompts, all samples of condition 0 first; the arguments are those
        of :meth:`sample`."""
        key = as_key(key)
        conditions, embeddings = self._request(measures, text, clip)
        if not isinstance(num_samples, int | np.integer) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
        if sampler not in SAMPLERS:
            raise UnknownNameError("sampler", sampler, SAMPLERS)
        steps = self._check_steps(sampler, steps)
        try:
            scale = float(guidance)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"guidance must be a number, got {guidance!r}") from err
        if not math.isfinite(scale):
            raise ConfigError(f"guidance must be finite, got {guidance!r}")
        if conditions is not None:
            conditions = jnp.asarray(np.repeat(conditions, int(num_samples), axis=0))
        if embeddings is not None:
            embeddings = jnp.repeat(embeddings, int(num_samples), axis=0)
        return _sample_latents(
            self.denoiser,
            self.measure_encoder,
            self.text_condition_encoder,
            self.schedule,
            key,
            conditions,
            embeddings,
            jnp.asarray(self.latent_scale, jnp.float32),
            jnp.asarray(self.clip_x0, jnp.float32),
            None if scale == 1.0 else jnp.asarray(scale, jnp.float32),
            sampler,
            steps,
        )

    def _check_steps(self, sampler: str, steps: int | None) -> int:
        total = self.schedule.num_timesteps
        if sampler == "ddpm":
            if steps is not None and steps != total:
                raise ConfigError(
                    f"the ddpm sampler always takes all {total} steps of the schedule, got "
                    f"steps={steps}; use sampler='ddim' (any step count) or steps=None"
                )
            return total
        if steps is None:
            return DEFAULT_STEPS[sampler]
        if not isinstance(steps, int | np.integer) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        if sampler == "ddim" and steps > total:
            raise ConfigError(f"ddim takes at most the schedule's {total} steps, got steps={steps}")
        return int(steps)

    def sample(
        self,
        key: PRNGKeyArray | int,
        measures: ArrayLike | None = None,
        num_samples: int = 1,
        *,
        text: str | Sequence[str] | None = None,
        sampler: str = "ddim",
        steps: int | None = None,
        guidance: float = 1.0,
        clip: bool = False,
    ) -> MLPPolicy:
        """Sample policies for the requested measures and/or text descriptions.

        Which conditions a generator takes is :attr:`conditions` (``config["conditions"]``):
        measures, text, or both (then either alone, or both for the same rows).

        Args:
            key: PRNG key (same key, same arguments -> the same policies), or an integer
                seed (``jax.random.key(seed)``).
            measures: ``[n, k]`` requested measures, or one ``[k]``, in the descriptor units
                of the source archive (``descriptor_low`` .. ``descriptor_high``).
            num_samples: policies per requested condition.
            text: ``n`` prompts (a list of strings, or one string), e.g. ``["hop forward on
                the left foot"]``; embedded by the frozen sentence encoder
                (:meth:`embed_text`). With measures too, one prompt per row of measures (or
                one of either, paired with every row of the other).
            sampler: ``"ddim"`` (deterministic, ``steps`` default 100), ``"ddpm"``
                (ancestral, all ``T`` steps) or ``"ode"`` (probability-flow ODE with Heun
                steps, default 9 = 19 denoiser evaluations).
            steps: sampler steps (``None``: the default above).
            guidance: classifier-free guidance scale (1.0: the conditional model alone;
                larger values follow the condition more strongly, at twice the cost).
            clip: clip measures outside the bounds to them instead of raising.

        Returns:
            A population of ``n * num_samples`` policies (leading batch axis on every leaf),
            row-major: all samples of condition 0, then of condition 1, ...; ready for
            ``Task.evaluate``.

        Raises:
            ConditionError: a kind of condition this generator does not take (text to a
                measures-only generator, measures to a text-only one), or none at all.
            ShapeError: measures of the wrong dimension, or as many rows as prompts.
            MissingTextEncoderError: text, and the sentence encoder is not set up.
            ConfigError: measures outside the bounds (without ``clip``), bad ``steps``,
                ``num_samples``, ``guidance`` or ``key``.
            UnknownNameError: an unknown sampler.
            NonFiniteError: some decoded parameters are NaN or infinite (none is returned).
        """
        z = self.sample_latents(
            key, measures, num_samples, text=text, sampler=sampler, steps=steps,
            guidance=guidance, clip=clip,
        )  # fmt: skip
        return self.decode(z)

    def decode(self, z: Float[ArrayLike, "batch latent"]) -> MLPPolicy:
        """Decode VAE latents ``[batch, latent]`` (or one ``[latent]``) into a population.

        Raises:
            ShapeError: ``z`` is not ``[batch, latent]``.
            NonFiniteError: some decoded parameters are NaN or infinite.
        """
        z = jnp.asarray(z, jnp.float32)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.vae.latent_size:
            raise ShapeError(
                f"latents must have shape [batch, {self.vae.latent_size}], got {z.shape}"
            )
        policies, finite = _decode(self.vae, z)
        finite = np.asarray(finite)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise NonFiniteError(
                f"{bad.size} of {finite.size} generated policies have NaN or infinite "
                f"parameters (rows {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}); "
                "they were not returned. The generator's weights or the requested measures "
                "are out of range: check the weights (load it again) or lower the guidance"
            )
        return policies

    def encode(self, policies: MLPPolicy) -> Float[Array, "batch latent"]:
        """Posterior means ``[batch, latent]`` of a population of this generator's spec."""
        return encode_means(self.vae, policies)

    # --------------------------------------------------------------------------- saving
    def _image_names(self) -> list[str]:
        """File names of ``config["images"]``: a list of names, or ``{label: file name}``."""
        images = self.config.get("images") or []
        names = list(images.values()) if isinstance(images, Mapping) else list(images)
        for name in names:
            if not isinstance(name, str) or not name.endswith(".png") or ".." in Path(name).parts:
                raise ConfigError(
                    f"config['images'] lists {name!r}; expected relative *.png file names"
                )
        return names

    def save_pretrained(self, path: str | Path, *, gif: bool = False) -> Path:
        """Write the generator directory (see ``docs/FORMAT.md``) and return its path.

        Files are written to a temporary directory inside ``path`` and moved into place with
        ``config.json`` last, so a reader never sees checksums that do not match; other files
        in ``path`` (a training ``checkpoint/``, ``metrics.jsonl``, images) are kept. Images
        listed in ``config["images"]`` (and ``tour.gif``) are copied from :attr:`path` when
        saving elsewhere, and linked from the card when present.

        Args:
            path: target directory.
            gif: also write ``tour.gif``, a video of policies sampled for a few measures
                spread over the descriptor bounds, labelled with them
                (:func:`zoo.video.write_card_gif`; samples and rolls out, so it takes
                seconds to minutes); skipped for tasks without a scene.
        """
        path = Path(path)
        images = self._image_names()
        if self.path is not None and self.path.resolve() != path.resolve():
            for name in [*images, METRICS_LOG, TOUR_NAME]:
                source, target = self.path / name, path / name
                if source.is_file() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
        if gif:
            from zoo.video import write_card_gif

            write_card_gif(self, path / TOUR_NAME)
        return super().save_pretrained(path)

    def _prepare_config(self, config: dict[str, Any], **options: Any) -> None:
        config["num_parameters"] = self.num_parameters()
        if self.text_condition_encoder is None:
            config["format_version"] = MEASURES_ONLY_FORMAT_VERSION

    def _modules(self) -> dict[str, tuple[Any, dict[str, Any]]]:
        """``{sub-folder: (module, its sub-config without hyperparameters)}``."""
        modules: dict[str, tuple[Any, dict[str, Any]]] = {
            "vae": (self.vae, {"class": "PolicyVAE", "policy": self.config["policy"]}),
            "denoiser": (self.denoiser, {"class": "ConditionalDenoiser"}),
        }
        if self.measure_encoder is not None:
            modules["condition_encoder"] = (self.measure_encoder, {"class": "MeasureEncoder"})
        if self.text_condition_encoder is not None:
            modules["text_condition_encoder"] = (
                self.text_condition_encoder,
                {"class": "TextConditionEncoder"},
            )
        return modules

    def with_weights_dtype(self, dtype: str) -> Generator:
        """This generator with every floating-point weight rounded to ``dtype`` (and back to
        float32 in memory), recorded as ``config["weights_dtype"]``: what
        :meth:`save_pretrained` then stores, and what a reader loads, exactly. ``"float16"``
        halves the files; evaluate the rounded generator, as the recipes do, to know what it
        costs.

        Raises:
            ConfigError: ``dtype`` is not one of :data:`WEIGHTS_DTYPES`.
        """
        if dtype not in WEIGHTS_DTYPES:
            raise ConfigError(
                f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {dtype!r}"
            )

        def rounded(module: Any) -> Any:
            floats, rest = eqx.partition(module, is_float32)  # what _weight_arrays stores
            return eqx.combine(round_genomes(floats, dtype), rest)

        generator = Generator(
            rounded(self.vae), rounded(self.denoiser), rounded(self.measure_encoder),
            self.schedule, self.latent_scale, {**self.config, "weights_dtype": dtype},
            text_condition_encoder=rounded(self.text_condition_encoder),
        )  # fmt: skip
        generator.path = self.path
        return generator

    def _weight_arrays(
        self, config: dict[str, Any], **options: Any
    ) -> dict[str, tuple[dict[str, np.ndarray], dict[str, str]]]:
        dtype = config.get("weights_dtype", "float32")

        def stored(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {name: a.astype(dtype) if is_float32(a) else a for name, a in arrays.items()}

        return {
            f"{folder}/{WEIGHTS_NAME}": (
                stored(_module_arrays(module)),
                {"format": "qdzoo-generator"},
            )
            for folder, (module, _) in self._modules().items()
        }

    def _write_extra_files(
        self, tmp: Path, target: Path, config: dict[str, Any], **options: Any
    ) -> list[str]:
        names = []
        for folder, (_, sub_config) in self._modules().items():
            write_json(
                tmp / folder / CONFIG_NAME, {**sub_config, "hyperparameters": config[folder]}
            )
            names.append(f"{folder}/{CONFIG_NAME}")
        return names

    def _render_card(self, config: dict[str, Any], target: Path, **options: Any) -> str:
        from hub_cards import render_generator_card

        present = [name for name in self._image_names() if (target / name).is_file()]
        return render_generator_card(config, images=present, tour=(target / TOUR_NAME).is_file())

    # -------------------------------------------------------------------------- loading
    @classmethod
    def _required_weight_files(cls, config: dict[str, Any]) -> tuple[str, ...]:
        return tuple(
            f"{folder}/{WEIGHTS_NAME}" for folder in _components(config_conditions(config))
        )

    @classmethod
    def _check_contents(cls, config: dict[str, Any], path: Path, version: int) -> None:
        if version < OLDEST_READABLE_VERSION:
            raise FormatVersionError(
                f"{path} uses generator format version {version}, written before qdzoo's first "
                f"release with another decoder layout; this qdzoo reads versions "
                f"{OLDEST_READABLE_VERSION} to {FORMAT_VERSION}. Distil it again from its "
                "archive (`qdzoo distill ARCHIVE --out DIR`)."
            )
        where = f"{path}/config.json"
        conditions = config.get("conditions") or ["measures"]
        if not set(conditions) <= set(CONDITIONS) or len(set(conditions)) != len(conditions):
            raise ArtifactError(
                f"{where}: conditions must be distinct entries of {list(CONDITIONS)}, got "
                f"{conditions}; {FIX_LOADED}"
            )
        needed = {
            "condition_encoder": "measures" in conditions,
            "text_condition_encoder": "text" in conditions,
            "text_encoder": "text" in conditions,
        }
        for section, required in needed.items():
            if required and not isinstance(config.get(section), dict):
                raise ArtifactError(
                    f"{where} takes conditions {conditions} but lacks the {section!r} section "
                    f"(an object); {FIX_LOADED}"
                )
        if "text" in conditions:
            identity = config["text_encoder"]
            missing = [f for f in ("package", "version", "sha256") if f not in identity]
            if missing:
                raise ArtifactError(
                    f"{where}: text_encoder lacks {missing} (the sentence encoder's package, "
                    f"version and weights' sha256); {FIX_LOADED}"
                )
        k = len(config["descriptors"]["names"])
        sizes = {f"descriptors.{b}": len(config["descriptors"][b]) for b in ("low", "high")}
        if k == 0 or any(n != k for n in sizes.values()):
            raise ArtifactError(
                f"{where}: descriptors.low and descriptors.high must have one entry per "
                f"descriptor (descriptors.names has {k}), got {sizes}; {FIX_LOADED}"
            )

    @classmethod
    def _from_checked_directory(cls, path: Path, config: dict[str, Any]) -> Generator:
        arrays = {}
        components = _components(config_conditions(config))
        for folder in components:
            sub_config = read_json(path / folder / CONFIG_NAME)
            if not isinstance(sub_config, dict):
                raise ArtifactError(
                    f"{path / folder / CONFIG_NAME} must hold a JSON object with 'class' and "
                    f"'hyperparameters', got {type(sub_config).__name__}; {FIX_LOADED}"
                )
            if _jsonable(sub_config.get("hyperparameters")) != _jsonable(config[folder]):
                raise ArtifactError(
                    f"{path / folder / CONFIG_NAME} describes another {folder} than "
                    f"{path / CONFIG_NAME} ({sub_config.get('hyperparameters')} vs "
                    f"{config[folder]}); the directory mixes two generators: save it again"
                )
            arrays[folder] = load_arrays(path / folder / WEIGHTS_NAME)
        try:
            skeletons = _build_skeletons(config)
        except (TypeError, ValueError) as err:
            raise ArtifactError(
                f"{path}/config.json describes no buildable generator ({err})"
            ) from err
        modules = {
            folder: _fill_module(skeleton, arrays[folder], f"{path / folder / WEIGHTS_NAME}")
            for folder, skeleton in skeletons.items()
        }
        return cls(
            modules["vae"], modules["denoiser"], modules.get("condition_encoder"),
            make_schedule(config["diffusion"]), float(config["latent_scale"]), config,
            text_condition_encoder=modules.get("text_condition_encoder"),
        )  # fmt: skip


def text_prompts(text: str | Sequence[str]) -> list[str]:
    """Prompts as a list: one string, or a non-empty sequence of non-empty strings.

    Raises:
        ConfigError: anything else.
    """
    texts = [text] if isinstance(text, str) else text
    if (
        not isinstance(texts, Sequence)
        or not texts
        or not all(isinstance(t, str) and t.strip() for t in texts)
    ):
        raise ConfigError(
            f"text must be a prompt or a non-empty list of non-empty prompts (strings), given "
            f"{text!r:.80}; e.g. text=['hop forward on the left foot']"
        )
    return list(texts)


_TEXT_ENCODERS: dict[str, Any] = {}
"""Sentence encoders loaded by :func:`load_text_encoder`, by the sha256 they were checked for."""


def text_encoder_identity(encoder: Any) -> dict[str, Any]:
    """``config["text_encoder"]`` of a generator trained with ``encoder``
    (:class:`zoo.text_encoder.TextEncoder`): name, package, version, sha256 of its weights,
    embedding size and pooling."""
    from zoo.text_setup import PACKAGE, PACKAGE_VERSION, sha256_of

    directory = getattr(encoder, "directory", None)
    return {
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        "package": PACKAGE,
        "version": PACKAGE_VERSION,
        "sha256": None if directory is None else sha256_of(Path(directory) / "model.safetensors"),
        "embedding_size": int(encoder.dim),
        "pooling": "mean over tokens, L2-normalised",
        "setup": "qdzoo text-setup",
    }


def load_text_encoder(identity: Mapping[str, Any]) -> Any:
    """The sentence encoder a text-conditioned generator needs (loaded once per process).

    Args:
        identity: the generator's ``config["text_encoder"]``.

    Raises:
        MissingTextEncoderError: the encoder is not set up (the message says to run
            ``qdzoo text-setup``).
        ChecksumError: its weights are not those the generator was trained with.
    """
    from zoo.text_encoder import TextEncoder
    from zoo.text_setup import SETUP_COMMAND, sha256_of

    expected = identity.get("sha256")
    key = str(expected)
    if key not in _TEXT_ENCODERS:
        encoder = TextEncoder.load()
        found = sha256_of(Path(encoder.directory) / "model.safetensors")
        if expected is not None and found != expected:
            raise ChecksumError(
                f"this generator was trained with the sentence encoder {identity.get('package')}"
                f"=={identity.get('version')} whose weights have sha256 {expected}, but "
                f"{encoder.directory}/model.safetensors has sha256 {found}; run "
                f"`{SETUP_COMMAND} --force` to install the expected weights"
            )
        _TEXT_ENCODERS[key] = encoder
    return _TEXT_ENCODERS[key]


def load_generator(
    name_or_path: str | Path, *, revision: str | None = None, token: str | None = None
) -> Generator:
    """Load a generator from a local directory, a catalog name or a Hub repo id."""
    return Generator.from_pretrained(name_or_path, revision=revision, token=token)
