"""Policy VAE, conditional denoiser and diffusion maths (tiny models, CPU)."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from models.denoiser import ConditionalDenoiser, MeasureEncoder, timestep_embedding
from models.diffusion import (
    classifier_free_guidance,
    cosine_schedule,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    diffusion_loss,
    initial_noise,
    ode_sample,
    q_sample,
)
from models.policy import MLPPolicy, PolicySpec
from models.policy_vae import (
    PolicyVAE,
    adaptive_max_pool,
    count_parameters,
    parameters_to_policy,
    policy_to_parameters,
    vae_loss,
)

TINY_VAE = dict(
    latent_size=16,
    cnn_channels=(4, 4),
    cnn_grid=2,
    vector_width=16,
    projection_width=16,
    node_size=16,
    head_width=16,
    basis_size=16,
    message_rounds=2,
    normaliser_width=16,
)
TINY_SPEC = PolicySpec(3, 2, (8, 8), normalise_observations=True)
SCHEDULE = cosine_schedule()


def init_key(seed):
    """Key to build models with: the ``rbg`` generator compiles faster on CPU than threefry,
    and building a model compiles one small program per parameter shape."""
    return jax.random.key(seed, impl="unsafe_rbg")


def shapes(tree):
    """``tree`` with every array (or shape struct) replaced by its shape."""
    return jax.tree_util.tree_map(lambda x: x.shape if hasattr(x, "shape") else x, tree)


def train(loss_fn, model, filter_spec, key, num_steps, learning_rate):
    """``num_steps`` Adam steps on ``loss_fn(model, key) -> (loss, aux)`` in one compiled scan,
    with gradient clipping and a cosine-decayed learning rate.

    The trainable arrays are optimised as one flat vector (a smaller program to compile than
    an optimiser update per leaf). Returns the trained model and the per-step ``aux``.
    """
    params, static = eqx.partition(model, filter_spec)
    flat, unravel = ravel_pytree(params)
    optimiser = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps)),
    )

    @jax.jit
    def run(flat, key):
        def step(carry, k):
            flat, state = carry
            grads, aux = jax.grad(
                lambda f: loss_fn(eqx.combine(unravel(f), static), k), has_aux=True
            )(flat)
            updates, state = optimiser.update(grads, state, flat)
            return (flat + updates, state), aux

        (flat, _), aux = jax.lax.scan(
            step, (flat, optimiser.init(flat)), jax.random.split(key, num_steps)
        )
        return flat, aux

    flat, aux = run(flat, key)
    return eqx.combine(unravel(flat), static), aux


# -- policy VAE --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        TINY_SPEC,
        PolicySpec(17, 6, (64, 64), normalise_observations=True),
        PolicySpec(5, 1, (), normalise_observations=True),
        PolicySpec(4, 3, (16, 7, 5), activation="relu", output_activation="identity"),
    ],
    ids=["tiny", "walker-normaliser", "linear", "three-hidden"],
)
def test_decoder_emits_the_spec_shapes(spec):
    vae = eqx.filter_eval_shape(PolicyVAE, spec, key=jax.random.key(0), **TINY_VAE)
    policies = eqx.filter_eval_shape(lambda: spec.init_population(jax.random.key(0), 3))
    mean, log_var = eqx.filter_eval_shape(lambda v, p: eqx.filter_vmap(v.encode)(p), vae, policies)
    assert mean.shape == log_var.shape == (3, 16)
    decoded = eqx.filter_eval_shape(lambda v, z: jax.vmap(v.decode)(z), vae, mean)
    assert shapes(decoded) == shapes(policies)
    assert jax.tree_util.tree_structure(decoded) == jax.tree_util.tree_structure(policies)


def tiny_archive(seed, size=16):
    """``size`` random policies of ``TINY_SPEC`` with random normalisers (numpy-drawn)."""
    rng = np.random.default_rng(seed)
    sizes = TINY_SPEC.layer_sizes
    obs = (size, TINY_SPEC.observation_size)
    return MLPPolicy(
        weights=tuple(
            jnp.asarray(rng.normal(size=(size, o, i)) / np.sqrt(i), jnp.float32)
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        ),
        biases=tuple(jnp.asarray(0.1 * rng.normal(size=(size, o)), jnp.float32) for o in sizes[1:]),
        obs_mean=jnp.asarray(rng.normal(size=obs), jnp.float32),
        obs_std=jnp.asarray(np.exp(0.5 * rng.normal(size=obs)), jnp.float32),
        activation=TINY_SPEC.activation,
        output_activation=TINY_SPEC.output_activation,
    )


@pytest.fixture(scope="module")
def trained_vae():
    """A tiny VAE with archive normalisation, trained on 16 random policies with the
    parameter, behaviour and KL terms; reconstruction errors before and after."""
    archive = tiny_archive(1)
    states = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)), jnp.float32)
    untrained = PolicyVAE(TINY_SPEC, key=init_key(0), **TINY_VAE)
    untrained = untrained.with_archive_statistics(archive)

    @eqx.filter_jit
    def reconstruct(vae):
        """Decoded posterior means, and their squared error in the space the VAE models."""
        mean, _ = eqx.filter_vmap(vae.encode)(archive)
        decoded = jax.vmap(lambda z: ravel_pytree(vae.decode_parameters(z))[0])(mean)
        target = jax.vmap(lambda p: ravel_pytree(vae.normalise(policy_to_parameters(p)))[0])(
            archive
        )
        return jax.vmap(vae.decode)(mean), jnp.mean((decoded - target) ** 2)

    _, before = reconstruct(untrained)
    vae, metrics = train(
        lambda v, k: vae_loss(v, archive, k, states=states),
        untrained,
        untrained.trainable_filter(),
        jax.random.key(3),
        num_steps=500,
        learning_rate=1e-2,
    )
    decoded, after = reconstruct(vae)
    return dict(
        archive=archive, untrained=untrained, vae=vae, metrics=metrics, decoded=decoded,
        before=before, after=after,
    )  # fmt: skip


def test_vae_reconstructs_a_tiny_archive(trained_vae):
    before, after = trained_vae["before"], trained_vae["after"]
    metrics = trained_vae["metrics"]
    assert set(metrics) == {"loss", "reconstruction", "kl", "behaviour"}
    assert all(bool(jnp.all(jnp.isfinite(m))) for m in metrics.values())
    np.testing.assert_allclose(
        metrics["loss"],
        metrics["reconstruction"] + 1e-6 * metrics["kl"] + metrics["behaviour"],
        rtol=1e-5,
    )
    assert metrics["behaviour"][-50:].mean() < 0.2 * metrics["behaviour"][:50].mean()
    assert after < 0.1 * before, (before, after)
    # decoded policies are ordinary policies of the spec
    decoded = trained_vae["decoded"]
    assert shapes(decoded) == shapes(trained_vae["archive"])
    assert bool(jnp.all(decoded.obs_std > 0))
    policy = jax.tree_util.tree_map(lambda x: x[0], decoded)
    assert policy.activation == TINY_SPEC.activation
    assert policy(jnp.ones(3)).shape == (2,)


def test_archive_normalisation(trained_vae):
    archive, vae = trained_vae["archive"], trained_vae["untrained"]
    skeleton = eqx.filter_eval_shape(
        PolicyVAE, TINY_SPEC, key=jax.random.key(0), **TINY_VAE, archive_normalisation=True
    )
    assert shapes(vae) == shapes(skeleton)  # loadable into a freshly built skeleton
    assert vae.config == skeleton.config and vae.config["archive_normalisation"]
    assert shapes(
        eqx.filter_eval_shape(PolicyVAE, TINY_SPEC, key=jax.random.key(0), **vae.config)
    ) == (shapes(vae))

    @eqx.filter_jit
    def normalised_and_round_trip(vae):
        parameters = jax.vmap(policy_to_parameters)(archive)
        normalised = jax.vmap(lambda p: ravel_pytree(vae.normalise(p))[0])(parameters)
        round_trip = jax.vmap(lambda p: ravel_pytree(vae.denormalise(vae.normalise(p)))[0])(
            parameters
        )
        raw = jax.vmap(lambda p: ravel_pytree(p)[0])(parameters)
        policies = jax.vmap(lambda p: parameters_to_policy(p, TINY_SPEC))(parameters)
        return normalised, round_trip, raw, policies

    normalised, round_trip, raw, policies = normalised_and_round_trip(vae)
    varying = np.asarray(raw).std(axis=0) > 1e-3
    np.testing.assert_allclose(normalised.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=0)[varying], 1.0, rtol=1e-3)
    np.testing.assert_allclose(round_trip, raw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ravel_pytree(policies)[0], ravel_pytree(archive)[0], rtol=1e-5)

    trainable = vae.trainable_filter()
    assert trainable.archive_mean is False and trainable.archive_std is False
    assert jax.tree_util.tree_leaves(trainable.decoder) == jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(eqx.is_inexact_array, vae.decoder)
    )
    params, static = eqx.partition(vae, trainable)
    grads = eqx.filter_eval_shape(
        jax.grad(lambda p: vae_loss(eqx.combine(p, static), archive, jax.random.key(0))[0]),
        params,
    )
    assert grads.archive_mean is None and shapes(grads.decoder) == shapes(params.decoder)


def test_archive_basis_spans_the_archive(trained_vae):
    """With as many basis directions as policies, the encoder's projection followed by the
    decoder's basis reproduces every centred layer of the archive exactly (it is a PCA)."""
    archive, untrained = trained_vae["archive"], trained_vae["untrained"]
    vae = untrained.with_archive_basis(archive)
    parameters = jax.vmap(lambda p: vae.normalise(policy_to_parameters(p)))(archive)
    for layer, head in enumerate(vae.decoder.basis_heads):
        w, b = parameters.weights[layer], parameters.biases[layer]
        flat = np.asarray(jnp.concatenate([w.reshape(w.shape[0], -1), b], axis=1))
        centred = flat - flat.mean(axis=0)
        coefficients = centred @ np.asarray(vae.encoder.basis_projections[layer]).T
        np.testing.assert_allclose(coefficients @ np.asarray(head.basis).T, centred, atol=2e-4)
        # coefficients of order one: the basis carries the archive's spread
        assert 0.1 < float(np.abs(coefficients).std()) < 10
    # the untrained VAE's basis heads are zero (they add nothing until trained or set)
    assert all(float(jnp.abs(h.basis).max()) == 0 for h in untrained.decoder.basis_heads)
    # the archive basis changes what the decoder emits, and nothing but the bases
    assert shapes(vae) == shapes(untrained)
    z = jnp.ones((untrained.latent_size,))
    before, after = untrained.decode_parameters(z), vae.decode_parameters(z)
    assert not np.allclose(ravel_pytree(before)[0], ravel_pytree(after)[0])


def test_adaptive_max_pool_covers_small_and_large_inputs():
    x = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5)
    pooled = adaptive_max_pool(x, 4)
    assert pooled.shape == (2, 4, 4)
    assert pooled[:, -1, -1] == pytest.approx(x[:, -1, -1])
    big = jax.random.normal(jax.random.key(0), (1, 9, 12))
    assert adaptive_max_pool(big, 3).max() == pytest.approx(big.max())


# -- denoiser ----------------------------------------------------------------------------------

LATENT = 8
MEASURES = 2


def toy_latents(key, n):
    """Latents that are a smooth function of 2-D measures, plus a little noise."""
    k1, k2 = jax.random.split(key)
    measures = jax.random.uniform(k1, (n, MEASURES))
    centred = 2.0 * measures - 1.0
    x0 = jnp.concatenate([centred, -centred, jnp.sin(3 * centred), centred**2 - 0.3], axis=1)
    return measures, x0 + 0.05 * jax.random.normal(k2, x0.shape)


class ToyGenerator(eqx.Module):
    encoder: MeasureEncoder
    denoiser: ConditionalDenoiser

    def loss(self, key, batch=64):
        k_data, k_loss = jax.random.split(key)
        measures, x0 = toy_latents(k_data, batch)
        tokens = jax.vmap(self.encoder)(measures)
        return diffusion_loss(
            self.denoiser.batched,
            SCHEDULE,
            x0,
            tokens,
            k_loss,
            null_condition=self.denoiser.null_condition,
        )


@pytest.fixture(scope="module")
def toy_generator():
    k1, k2 = jax.random.split(init_key(0))
    model = ToyGenerator(
        MeasureEncoder(MEASURES, num_tokens=2, token_size=16, width=32, key=k1),
        ConditionalDenoiser(
            LATENT,
            16,
            num_condition_tokens=2,
            width=32,
            num_blocks=2,
            num_heads=2,
            time_embedding_size=16,
            key=k2,
        ),
    )
    model, losses = train(
        lambda m, k: (m.loss(k),) * 2,
        model,
        eqx.is_inexact_array,
        jax.random.key(1),
        num_steps=300,
        learning_rate=3e-3,
    )
    return model, losses


@pytest.fixture(scope="module")
def denoiser_outputs(toy_generator):
    """Everything the denoiser tests look at, from one compiled function."""
    model, _ = toy_generator

    @eqx.filter_jit
    def evaluate(model):
        denoiser = model.denoiser
        out = {"loss": model.loss(jax.random.key(42), batch=1024)}
        # errors with the true condition and with the null condition
        measures, x0 = toy_latents(jax.random.key(7), 1024)
        t = jnp.full((1024,), 60)
        noise = jax.random.normal(jax.random.key(8), x0.shape)
        x_t = q_sample(SCHEDULE, x0, t, noise)
        tokens = jax.vmap(model.encoder)(measures)
        null = jnp.broadcast_to(denoiser.null_condition, tokens.shape)
        out["conditional_error"] = jnp.mean((denoiser.batched(x_t, t, tokens) - noise) ** 2)
        out["null_error"] = jnp.mean((denoiser.batched(x_t, t, null) - noise) ** 2)
        # guidance at one shared step, traced and Python scales
        x, tokens, null = x_t[:6], tokens[:6], null[:6]
        step = jnp.asarray(123.0)
        out["conditional"] = denoiser.batched(x, step, tokens)
        out["unconditional"] = denoiser.batched(x, step, null)
        for name, scale in [("one", jnp.asarray(1.0)), ("zero", jnp.asarray(0.0)), ("three", 3.0)]:
            guided = classifier_free_guidance(denoiser.batched, denoiser.null_condition, scale)
            out[f"guided_{name}"] = guided(x, step, tokens)
        # per-row steps, one sample alone, padded and masked tokens
        steps = jnp.arange(6.0) * 100
        out["tokens"] = tokens
        out["batched"] = denoiser.batched(x, steps, tokens)
        out["single"] = denoiser(x[2], steps[2], tokens[2])
        padded = jnp.concatenate([tokens, 100.0 * jnp.ones((6, 1, 16))], axis=1)
        mask = jnp.broadcast_to(jnp.array([True, True, False]), (6, 3))
        out["masked"] = denoiser.batched(x, steps, (padded, mask))
        return out

    return evaluate(model)


def test_denoiser_training_loss_falls(toy_generator, denoiser_outputs):
    _, losses = toy_generator
    before = losses[0]
    assert before == pytest.approx(1.0, abs=0.25)  # zero-initialised output predicts eps = 0
    assert denoiser_outputs["loss"] < 0.6 * before, (before, denoiser_outputs["loss"])
    # the condition is used: the true measures explain the data better than the null tokens
    out = denoiser_outputs
    assert out["conditional_error"] < out["null_error"], out


def test_guidance_scale_one_is_the_conditional_prediction(toy_generator, denoiser_outputs):
    model, _ = toy_generator
    eps_fn = model.denoiser.batched
    assert classifier_free_guidance(eps_fn, model.denoiser.null_condition, 1.0) is eps_fn
    out = denoiser_outputs
    conditional, unconditional = out["conditional"], out["unconditional"]
    np.testing.assert_allclose(out["guided_one"], conditional, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["guided_zero"], unconditional, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out["guided_three"], unconditional + 3.0 * (conditional - unconditional), rtol=1e-4,
        atol=1e-5,
    )  # fmt: skip


def test_denoiser_shapes_masks_and_samplers(toy_generator, denoiser_outputs):
    model, _ = toy_generator
    out = denoiser_outputs
    assert out["tokens"].shape == (6, 2, 16) and out["batched"].shape == (6, LATENT)
    np.testing.assert_allclose(out["batched"][2], out["single"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["masked"], out["batched"], rtol=1e-5, atol=1e-6)
    assert timestep_embedding(jnp.asarray(3.0), 16).shape == (16,)

    @eqx.filter_jit
    def sample(model, tokens, keys):
        denoiser = model.denoiser
        return jax.vmap(
            lambda k: ddim_sample(
                denoiser.batched, SCHEDULE, k, (6, LATENT), tokens, num_steps=4,
                null_condition=denoiser.null_condition, guidance_scale=2.0,
            )
        )(keys)  # fmt: skip

    samples = sample(model, out["tokens"], jax.random.split(jax.random.key(2), 3))
    assert samples.shape == (3, 6, LATENT) and bool(jnp.all(jnp.isfinite(samples)))
    with pytest.raises(ValueError, match="null_condition"):
        ddim_sample(model.denoiser.batched, SCHEDULE, jax.random.key(0), (6, LATENT),
                    out["tokens"], guidance_scale=2.0)  # fmt: skip


# -- diffusion maths ---------------------------------------------------------------------------

MU = jnp.array([1.5, -0.5])
STD = 0.3


def gaussian_eps(x, t, condition):
    """Optimal eps for data ~ N(MU, STD^2 I): E[eps | x_t] in closed form."""
    abar = SCHEDULE.alpha_bar_at(jnp.asarray(t))
    abar = abar.reshape(abar.shape + (1,) * (x.ndim - abar.ndim))
    return jnp.sqrt(1 - abar) * (x - jnp.sqrt(abar) * MU) / (abar * STD**2 + 1 - abar)


def exact_flow(key, shape):
    """The probability-flow ODE's own map for Gaussian data, then the final step to x_0.

    With y = x / sqrt(abar) and sigma^2 = (1 - abar) / abar, dy/dsigma = sigma (y - MU) /
    (STD^2 + sigma^2), so y - MU grows as sqrt(STD^2 + sigma^2).
    """
    x_start, _ = initial_noise(key, shape, 0)
    sigma_max, sigma_min = jnp.exp(SCHEDULE.log_sigmas[-1]), jnp.exp(SCHEDULE.log_sigmas[0])
    y = x_start * jnp.sqrt(1 + sigma_max**2)
    y = MU + (y - MU) * jnp.sqrt((STD**2 + sigma_min**2) / (STD**2 + sigma_max**2))
    return y - sigma_min**2 * (y - MU) / (STD**2 + sigma_min**2)


def test_cosine_schedule_and_ddim_timesteps():
    assert SCHEDULE.num_timesteps == 600
    abar = np.asarray(SCHEDULE.alphas_cumprod)
    assert np.all(np.diff(abar) < 0) and abar[0] > 0.9999 and abar[-1] < 1e-6
    assert float(SCHEDULE.betas.max()) == pytest.approx(0.999)
    np.testing.assert_allclose(SCHEDULE.alpha_bar_at(jnp.arange(600.0)), abar, rtol=2e-3)
    np.testing.assert_allclose(SCHEDULE.timestep_at(SCHEDULE.log_sigmas), np.arange(600), atol=2e-2)
    steps = ddim_timesteps(600, 100)
    assert steps[0] == 599 and steps[-1] == 0 and len(set(steps.tolist())) == 100
    assert np.all(-np.diff(steps) <= 7)  # spread over all T, not only the first 100
    np.testing.assert_array_equal(ddim_timesteps(600, 600), np.arange(599, -1, -1))
    x0 = jnp.ones((3, 2))
    noise = jnp.zeros((3, 2))
    np.testing.assert_allclose(q_sample(SCHEDULE, x0, jnp.array([0, 0, 0]), noise), x0, rtol=1e-4)


def test_ddim_with_eta_one_and_all_steps_is_ddpm():
    # step by step: with sigma_t^2 = beta_tilde_t the DDIM update is DDPM's posterior step
    keys = jax.random.split(jax.random.key(0), 3)
    t = jnp.arange(600)
    x, eps, noise = (jax.random.normal(k, (600, 4)) for k in keys)
    ddpm = jax.vmap(lambda *a: ddpm_step(SCHEDULE, *a))(x, t, eps, noise)
    ddim = jax.vmap(lambda *a: ddim_step(SCHEDULE, *a, eta=1.0))(x, t, t - 1, eps, noise)
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-4, atol=1e-4)
    # whole trajectories, same key -> same draws -> same samples
    key = jax.random.key(1)
    a = jax.jit(lambda k: ddpm_sample(gaussian_eps, SCHEDULE, k, (256, 2)))(key)
    b = jax.jit(lambda k: ddim_sample(gaussian_eps, SCHEDULE, k, (256, 2), num_steps=600, eta=1.0))(
        key
    )
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a.mean(axis=0), MU, atol=0.06)
    np.testing.assert_allclose(a.std(axis=0), STD, atol=0.05)


def test_ode_and_ddim_agree_on_gaussian_data():
    key, shape = jax.random.key(2), (2000, 2)
    exact = exact_flow(key, shape)
    ddim = jax.jit(lambda k: ddim_sample(gaussian_eps, SCHEDULE, k, shape, num_steps=100))(key)
    heun = jax.jit(lambda k: ode_sample(gaussian_eps, SCHEDULE, k, shape, num_steps=50))(key)
    tsit5 = jax.jit(
        lambda k: ode_sample(
            gaussian_eps, SCHEDULE, k, shape, solver=diffrax.Tsit5(), adaptive=True,
            rtol=1e-5, atol=1e-5,
        )
    )(key)  # fmt: skip
    np.testing.assert_allclose(tsit5.samples, exact, atol=1e-3)
    np.testing.assert_allclose(heun.samples, exact, atol=0.1)
    np.testing.assert_allclose(ddim, exact, atol=0.1)
    np.testing.assert_allclose(ddim, heun.samples, atol=0.1)
    assert int(heun.num_function_evaluations) == 101
    assert int(tsit5.num_function_evaluations) == 6 * int(tsit5.num_steps) + 2
    for samples in (ddim, heun.samples, tsit5.samples):
        np.testing.assert_allclose(samples.mean(axis=0), MU, atol=0.03)
        np.testing.assert_allclose(samples.std(axis=0), STD, atol=0.02)


def test_parameter_counts_are_reported():
    spec = PolicySpec(17, 6, (64, 64), normalise_observations=True)
    vae = eqx.filter_eval_shape(PolicyVAE, spec, key=jax.random.key(0))
    denoiser = eqx.filter_eval_shape(ConditionalDenoiser, key=jax.random.key(0))
    assert 0 < count_parameters(vae.decoder) < count_parameters(vae)
    assert count_parameters(denoiser) > 0


def test_measure_encoder_fourier_features():
    from zoo.generator import measure_encoder_config

    plain = MeasureEncoder(2, num_tokens=2, token_size=8, width=16, key=jax.random.key(0))
    fourier = MeasureEncoder(
        2, num_tokens=2, token_size=8, width=16, frequencies=5, key=jax.random.key(0)
    )
    assert plain.measure_size == fourier.measure_size == 2
    assert fourier.mlp.in_size == 2 * (1 + 2 * 5)
    config = measure_encoder_config(fourier)
    assert config == {
        "measure_size": 2, "num_tokens": 2, "token_size": 8, "width": 16, "frequencies": 5,
    }  # fmt: skip
    rebuilt = MeasureEncoder(key=jax.random.key(1), **config)
    assert shapes(rebuilt) == shapes(fourier)
    a, b = jnp.array([0.5, 0.5]), jnp.array([0.5 + 1 / 32, 0.5])
    np.testing.assert_array_equal(plain.features(a), a)
    # the highest frequency (16 periods over [0, 1]) separates measures half a period apart
    gap = jnp.linalg.norm(fourier.features(a) - fourier.features(b))
    assert gap > 30 * jnp.linalg.norm(a - b)
    assert fourier(a).shape == (2, 8) and bool(jnp.all(jnp.isfinite(fourier(a))))
