"""The device-resident ring replay buffer."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array

from training import replay
from zoo.errors import ConfigError, ShapeError

TEMPLATE = {"obs": jnp.zeros(3), "reward": jnp.zeros(()), "done": jnp.zeros((), bool)}


def batch(first: int, n: int) -> dict[str, Array]:
    """``n`` transitions numbered ``first, first + 1, ...`` (every field holds the number)."""
    ids = jnp.arange(first, first + n, dtype=jnp.float32)
    return {"obs": jnp.repeat(ids[:, None], 3, axis=1), "reward": ids, "done": ids % 2 == 1}


def rewards(buffer: replay.ReplayBuffer) -> list[float]:
    return np.asarray(buffer.data["reward"]).tolist()


def test_rows_fill_in_order_and_wrap_around() -> None:
    buffer = replay.init(TEMPLATE, 5)
    assert buffer.capacity == 5 and int(replay.size(buffer)) == 0
    buffer = replay.add(buffer, batch(1, 3))
    assert rewards(buffer) == [1, 2, 3, 0, 0] and int(replay.size(buffer)) == 3
    buffer = replay.add(buffer, batch(4, 4))  # 4, 5 fill the end; 6, 7 overwrite 1, 2
    assert rewards(buffer) == [6, 7, 3, 4, 5]
    assert int(replay.size(buffer)) == 5 and int(buffer.position) == 2
    np.testing.assert_array_equal(buffer.data["obs"][:, 0], buffer.data["reward"])
    assert np.asarray(buffer.data["done"]).tolist() == [False, True, True, False, True]
    buffer = replay.add(buffer, batch(10, 12))  # more than the capacity: the last 5 stay
    assert sorted(rewards(buffer)) == [17, 18, 19, 20, 21]
    assert rewards(buffer) == [18, 19, 20, 21, 17] and int(buffer.position) == 4


def test_masked_rows_are_skipped() -> None:
    buffer = replay.init(TEMPLATE, 4)
    mask = jnp.array([True, False, False, True, True, False])
    buffer = replay.add(buffer, batch(1, 6), mask)
    assert rewards(buffer) == [1, 4, 5, 0] and int(replay.size(buffer)) == 3
    buffer = replay.add(buffer, batch(7, 3), jnp.zeros(3, bool))
    assert rewards(buffer) == [1, 4, 5, 0] and int(buffer.position) == 3
    buffer = replay.add(buffer, batch(7, 3), jnp.array([False, True, True]))
    assert rewards(buffer) == [9, 4, 5, 8] and int(replay.size(buffer)) == 4


def test_sampling_draws_only_filled_rows() -> None:
    buffer = replay.add(replay.init(TEMPLATE, 100), batch(1, 3))
    sample = replay.sample(buffer, jax.random.key(0), 300)
    assert sample["obs"].shape == (300, 3) and sample["done"].dtype == jnp.bool_
    assert set(np.asarray(sample["reward"]).tolist()) == {1.0, 2.0, 3.0}
    np.testing.assert_array_equal(sample["obs"][:, 0], sample["reward"])


def test_add_and_sample_under_jit_with_donation() -> None:
    @partial(jax.jit, donate_argnums=0)
    def step(buffer: replay.ReplayBuffer, transitions: dict, mask: Array, key: Array) -> tuple:
        buffer = replay.add(buffer, transitions, mask)
        return buffer, replay.sample(buffer, key, 8)

    buffer = replay.init(TEMPLATE, 6)
    for i in range(3):
        old = buffer
        buffer, sample = step(buffer, batch(4 * i + 1, 4), jnp.arange(4) < 3, jax.random.key(i))
        assert old.data["reward"].is_deleted()  # updated in place
    assert rewards(buffer) == [9, 10, 11, 5, 6, 7] and int(replay.size(buffer)) == 6
    assert set(np.asarray(sample["reward"]).tolist()) <= {5, 6, 7, 9, 10, 11}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="capacity"):
        replay.init(TEMPLATE, 0)
    buffer = replay.init(TEMPLATE, 4)
    with pytest.raises(ShapeError, match="structure"):
        replay.add(buffer, {"obs": jnp.zeros((2, 3))})
    with pytest.raises(ShapeError, match="expected"):
        replay.add(buffer, {**batch(0, 2), "obs": jnp.zeros((2, 4))})
    with pytest.raises(ShapeError, match="mask"):
        replay.add(buffer, batch(0, 2), jnp.ones(3, bool))
