"""zoo.hub end to end: the real huggingface_hub client against the in-process Hub server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from hub_server import HubServer, git_blob_oid, hub_server_fixture  # noqa: F401  (the hub_server fixture)
from huggingface_hub import constants
from safetensors.numpy import load_file, save_file

from zoo import errors, hub
from zoo.errors import ArtifactError, HubError, OutputExistsError

REPO = "qdzoo-tests/tiny-archive"


def make_artifact(directory: Path, *, scale: float = 1.0, version: int = 1) -> Path:
    """A small artifact directory: config.json, weights, a card and a file in a sub-folder."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format_version": 1, "artifact": "archive", "version": version}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    arrays = {
        "fitness": np.arange(6, dtype=np.float32) * scale,
        "genomes": np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(6, 4) * scale,
    }
    save_file(arrays, directory / "archive.safetensors", metadata={"format": "np"})
    (directory / "README.md").write_text("---\nlibrary_name: qdzoo\nlicense: mit\n---\n# Tiny\n")
    (directory / "images").mkdir(exist_ok=True)
    (directory / "images" / "heatmap.png").write_bytes(bytes(range(256)) * 4)
    return directory


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (links followed) as ``{posix path: bytes}``."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def artifact_files(directory: Path) -> dict[str, bytes]:
    """Like :func:`tree_bytes` without the ``.gitattributes`` every Hub repo starts with."""
    files = tree_bytes(directory)
    files.pop(".gitattributes", None)
    return files


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return make_artifact(tmp_path / "artifact")


@pytest.fixture
def pushed(hub_server: HubServer, artifact: Path) -> str:
    """``artifact`` pushed to ``REPO``; returns the commit sha."""
    return hub.push_directory(artifact, REPO, token=hub_server.token)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------- round trip


def test_push_then_pull_gives_the_same_bytes(
    hub_server: HubServer,
    artifact: Path,
    tmp_path: Path,
) -> None:
    sha = hub.push_directory(artifact, REPO, token=hub_server.token)

    assert sha == hub_server.repo(REPO).branches["main"]
    assert hub_server.repo(REPO).private is False
    snapshot = hub.resolve_local_or_hub(REPO)
    assert snapshot.name == sha
    assert Path(constants.HF_HUB_CACHE) in snapshot.parents
    assert artifact_files(snapshot) == tree_bytes(artifact)
    weights = load_file(snapshot / "archive.safetensors")
    np.testing.assert_array_equal(weights["fitness"], np.arange(6, dtype=np.float32))

    out = hub.download_to(REPO, tmp_path / "pulled" / "copy")
    assert out == (tmp_path / "pulled" / "copy").absolute()
    assert artifact_files(out) == tree_bytes(artifact)
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy"]


def test_second_revision_and_pull_of_the_first_by_sha_and_tag(
    hub_server: HubServer,
    tmp_path: Path,
) -> None:
    first = make_artifact(tmp_path / "v1", scale=1.0, version=1)
    second = make_artifact(tmp_path / "v2", scale=2.0, version=2)
    sha1 = hub.push_directory(first, REPO, token=hub_server.token, tag="v1")
    sha2 = hub.push_directory(
        second, REPO, token=hub_server.token, commit_message="second", tag="v2"
    )

    assert sha1 != sha2
    assert hub_server.repo(REPO).tags == {"v1": sha1, "v2": sha2}
    assert hub_server.repo(REPO).commits[sha2].message == "second"
    assert artifact_files(hub.resolve_local_or_hub(REPO)) == tree_bytes(second)
    assert artifact_files(hub.resolve_local_or_hub(REPO, sha1)) == tree_bytes(first)
    assert artifact_files(hub.resolve_local_or_hub(REPO, "v1")) == tree_bytes(first)
    assert artifact_files(hub.download_to(REPO, tmp_path / "old", "v1")) == tree_bytes(first)
    config = hub.resolve_file(REPO, "config.json", revision=sha1)
    assert json.loads(config.read_text())["version"] == 1


def test_push_without_changes_makes_no_commit(hub_server: HubServer, artifact: Path) -> None:
    first = hub.push_directory(artifact, REPO, token=hub_server.token)
    again = hub.push_directory(artifact, REPO, token=hub_server.token)
    assert again == first
    assert len(hub_server.repo(REPO).commits) == 2  # the initial commit and ours


def test_push_to_a_new_branch_leaves_main_alone(
    hub_server: HubServer,
    artifact: Path,
    pushed: str,
) -> None:
    (artifact / "config.json").write_text('{"changed": true}')
    sha = hub.push_directory(artifact, REPO, token=hub_server.token, revision="experiment")
    assert hub_server.repo(REPO).branches == {"main": pushed, "experiment": sha}
    on_branch = hub.resolve_file(REPO, "config.json", revision="experiment")
    assert json.loads(on_branch.read_text()) == {"changed": True}
    assert json.loads(hub.resolve_file(REPO, "config.json").read_text())["artifact"] == "archive"


def test_allow_patterns_fetch_only_matching_files(
    hub_server: HubServer,
    pushed: str,
    tmp_path: Path,
) -> None:
    snapshot = hub.resolve_local_or_hub(REPO, allow_patterns=["config.json", "*.safetensors"])
    assert sorted(tree_bytes(snapshot)) == ["archive.safetensors", "config.json"]
    assert not any("heatmap" in request for request in hub_server.requests)

    hub.resolve_local_or_hub(REPO)  # the cached snapshot folder now holds every file
    out = hub.download_to(REPO, tmp_path / "out", allow_patterns=["images/"])
    assert sorted(tree_bytes(out)) == ["images/heatmap.png"]


# ---------------------------------------------------------------------- local / ids


def test_a_local_directory_is_returned_as_is(hub_server: HubServer, artifact: Path) -> None:
    assert hub.resolve_local_or_hub(artifact) == artifact
    assert hub.resolve_local_or_hub(str(artifact)) == artifact
    with pytest.warns(UserWarning, match="revision='v1' is ignored"):
        assert hub.resolve_local_or_hub(artifact, "v1") == artifact
    assert hub.resolve_file(artifact, "images/heatmap.png") == artifact / "images" / "heatmap.png"
    with pytest.raises(errors.HubFileNotFoundError, match="'nope.json'"):
        hub.resolve_file(artifact, "nope.json")
    assert hub_server.requests == []


@pytest.mark.parametrize(
    "given", ["a/b/c", "bad//id", "-leading/x", "org/name.git", "org/na--me", ""]
)
def test_invalid_repo_ids_are_refused_before_any_request(
    hub_server: HubServer,
    given: str,
) -> None:
    with pytest.raises(errors.InvalidRepoIdError, match="neither an existing local directory"):
        hub.resolve_local_or_hub(given)
    assert hub_server.requests == []


def test_missing_paths_and_files_are_not_repo_ids(tmp_path: Path) -> None:
    with pytest.raises(errors.ArtifactNotFoundError, match="no directory at"):
        hub.resolve_local_or_hub(tmp_path / "missing")
    with pytest.raises(errors.ArtifactNotFoundError, match="no directory at './missing'"):
        hub.resolve_local_or_hub("./missing")
    with pytest.raises(errors.UnsafeRepoPathError, match="'..' part"):
        hub.resolve_file(tmp_path, "../file.json")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(errors.ArtifactNotFoundError, match="is a file"):
        hub.resolve_local_or_hub(tmp_path / "file.json")
    with pytest.raises(errors.InvalidRepoIdError, match="no namespace"):
        hub.push_directory(tmp_path, "just-a-name")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="empty"):
        hub.push_directory(tmp_path / "empty", "a/b")


# ------------------------------------------------------------------------- not found


def test_missing_repo_says_it_may_be_private(
    hub_server: HubServer,
    tmp_path: Path,
) -> None:
    with pytest.raises(errors.HubRepoNotFoundError) as caught:
        hub.resolve_local_or_hub("qdzoo-tests/does-not-exist")
    message = str(caught.value)
    assert "'qdzoo-tests/does-not-exist'" in message and hub_server.endpoint in message
    assert "private" in message and "HF_TOKEN" in message and "huggingface-cli login" in message
    assert "no local directory" in message
    assert isinstance(caught.value, HubError)
    with pytest.raises(errors.HubRepoNotFoundError):
        hub.download_to("qdzoo-tests/does-not-exist", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_revision_names_it(hub_server: HubServer, pushed: str, tmp_path: Path) -> None:
    with pytest.raises(errors.HubRevisionNotFoundError, match="revision 'v9' not found") as caught:
        hub.resolve_local_or_hub(REPO, "v9")
    assert REPO in str(caught.value)
    with pytest.raises(errors.HubRevisionNotFoundError, match="'0{40}'"):
        hub.download_to(REPO, tmp_path / "out", "0" * 40)
    assert not (tmp_path / "out").exists()


def test_missing_file_names_it(hub_server: HubServer, pushed: str) -> None:
    with pytest.raises(errors.HubFileNotFoundError, match="file 'generator.safetensors' not found"):
        hub.resolve_file(REPO, "generator.safetensors")
    hub_server.repo(REPO).tags["v0"] = pushed
    hub_server.add_commit(REPO, {"late.json": b"{}"})
    assert hub.resolve_file(REPO, "late.json").read_bytes() == b"{}"
    with pytest.raises(errors.HubFileNotFoundError, match="'late.json' not found .*revision 'v0'"):
        hub.resolve_file(REPO, "late.json", revision="v0")


# ------------------------------------------------------------------- offline / network


def test_offline_mode_serves_the_cache(
    hub_server: HubServer,
    pushed: str,
    artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    online = hub.resolve_local_or_hub(REPO)
    count = len(hub_server.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    assert hub.resolve_local_or_hub(REPO) == online
    assert hub.resolve_local_or_hub(REPO, pushed) == online
    assert hub.resolve_file(REPO, "config.json") == online / "config.json"
    out = hub.download_to(REPO, tmp_path / "offline-copy")
    assert artifact_files(out) == tree_bytes(artifact)
    assert len(hub_server.requests) == count


def test_offline_mode_with_an_empty_cache_names_hf_hub_offline(
    hub_server: HubServer,
    pushed: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(errors.HubOfflineError, match="HF_HUB_OFFLINE") as caught:
        hub.resolve_local_or_hub(REPO)
    assert constants.HF_HUB_CACHE in str(caught.value)
    with pytest.raises(errors.HubOfflineError, match="HF_HUB_OFFLINE"):
        hub.download_to(REPO, tmp_path / "out")
    with pytest.raises(errors.HubOfflineError, match="'config.json'.*HF_HUB_OFFLINE"):
        hub.resolve_file(REPO, "config.json")
    with pytest.raises(errors.HubOfflineError, match="HF_HUB_OFFLINE"):
        hub.push_directory(tmp_path, REPO, token=hub_server.token)
    assert not (tmp_path / "out").exists()


def test_unreachable_endpoint_names_hf_endpoint(
    hub_server: HubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}"
    )
    with pytest.raises(errors.HubConnectionError, match="HF_ENDPOINT") as caught:
        hub.resolve_local_or_hub(REPO)
    assert dead in str(caught.value)
    with pytest.raises(errors.HubConnectionError, match="HF_ENDPOINT"):
        hub.download_to(REPO, tmp_path / "out")
    artifact = make_artifact(tmp_path / "a")
    with pytest.raises(errors.HubConnectionError, match=dead):
        hub.push_directory(artifact, REPO, token=hub_server.token)
    assert not (tmp_path / "out").exists()


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(connection)

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.accepted:
            connection.close()
        self.sock.close()


def test_a_silent_endpoint_times_out(
    hub_server: HubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts and never answers: every call ends with HubConnectionError."""
    import time

    import zoo

    with SilentServer() as silent:
        monkeypatch.setattr(constants, "ENDPOINT", silent.endpoint)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            silent.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.3")
        monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.3")
        assert hub.timeouts() == (0.3, 0.3)
        start = time.monotonic()
        with pytest.raises(errors.HubConnectionError, match="HF_ENDPOINT"):
            hub.resolve_local_or_hub(REPO)
        with pytest.raises(errors.HubConnectionError, match="HF_ENDPOINT"):
            hub.download_to(REPO, tmp_path / "out")
        with pytest.raises(errors.HubConnectionError, match="HF_ENDPOINT"):
            hub.resolve_file(REPO, "config.json")
        with pytest.raises(errors.HubConnectionError, match="HF_ENDPOINT"):
            zoo.load_archive("ns/x")
        with pytest.raises(errors.HubConnectionError, match="timed out"):
            hub.push_directory(make_artifact(tmp_path / "a"), REPO, token=hub_server.token)
        assert time.monotonic() - start < 20
        assert silent.accepted  # the client did connect, then gave up waiting
    assert not (tmp_path / "out").exists()


def test_a_bad_timeout_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    monkeypatch.delenv("HF_HUB_DOWNLOAD_TIMEOUT", raising=False)
    assert hub.timeouts() == (hub.DEFAULT_TIMEOUT_S, hub.DEFAULT_TIMEOUT_S)
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(errors.ConfigError, match="HF_HUB_DOWNLOAD_TIMEOUT must be a positive"):
        hub.timeouts()


# ------------------------------------------------------------------------------ auth


def test_private_repo_needs_the_token(
    hub_server: HubServer,
    artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub.push_directory(artifact, REPO, private=True, token=hub_server.token)
    assert hub_server.repo(REPO).private

    with pytest.raises(errors.HubRepoNotFoundError, match="private.*HF_TOKEN"):
        hub.resolve_local_or_hub(REPO)
    with pytest.raises(errors.HubRepoNotFoundError, match="HF_TOKEN"):
        hub.download_to(REPO, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    with_token = hub.resolve_local_or_hub(REPO, token=hub_server.token, cache_dir=tmp_path / "c1")
    assert artifact_files(with_token) == tree_bytes(artifact)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    from_env = hub.download_to(REPO, tmp_path / "out")
    assert artifact_files(from_env) == tree_bytes(artifact)


def test_bad_or_missing_tokens_are_auth_errors(
    hub_server: HubServer,
    artifact: Path,
    pushed: str,
) -> None:
    with pytest.raises(errors.HubAuthError, match="write access"):
        hub.push_directory(artifact, "qdzoo-tests/other")
    with pytest.raises(errors.HubAuthError, match="refused access"):
        hub.resolve_local_or_hub(REPO, token="hf_not_the_right_one")


def test_existing_tag_is_a_clear_error(
    hub_server: HubServer,
    artifact: Path,
) -> None:
    hub.push_directory(artifact, REPO, token=hub_server.token, tag="v1")
    (artifact / "config.json").write_text("{}")
    with pytest.raises(HubError, match="tag 'v1' already exists.*pushed as commit"):
        hub.push_directory(artifact, REPO, token=hub_server.token, tag="v1")


# -------------------------------------------------------------------- download_to safety


@pytest.mark.parametrize("name", ["../evil.txt", "images/../../evil.txt", "/tmp/qdzoo-evil.txt"])
def test_download_to_refuses_escaping_file_names(
    hub_server: HubServer,
    pushed: str,
    tmp_path: Path,
    name: str,
) -> None:
    hub_server.add_commit(REPO, {name: b"pwned"}, check_paths=False)
    out = tmp_path / "nested" / "out"
    with pytest.raises(errors.UnsafeRepoPathError, match="outside the target directory"):
        hub.download_to(REPO, out)
    assert not out.exists()
    assert not (tmp_path / "nested" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not any("resolve" in r and "evil" in r for r in hub_server.requests)


def test_download_to_refuses_cache_links_leading_out(
    hub_server: HubServer,
    pushed: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot = hub.resolve_local_or_hub(REPO)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the artifact")
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(secret)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(errors.UnsafeRepoPathError, match="outside the cache folder"):
        hub.download_to(REPO, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_interrupted_download_leaves_no_out_dir(
    hub_server: HubServer,
    pushed: str,
    tmp_path: Path,
) -> None:
    hub_server.fail_downloads.add("archive.safetensors")
    out = tmp_path / "pulled" / "out"
    with pytest.raises(HubError, match="answered 500"):
        hub.download_to(REPO, out)
    assert not out.exists()
    assert not (tmp_path / "pulled").exists() or list((tmp_path / "pulled").iterdir()) == []

    hub_server.fail_downloads.clear()
    assert (hub.download_to(REPO, out) / "archive.safetensors").is_file()


def test_interrupted_copy_leaves_no_out_dir(
    hub_server: HubServer,
    pushed: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    copied: list[str] = []
    real_copy = shutil.copyfile

    def copy_then_stop(source: os.PathLike, target: os.PathLike) -> None:
        if copied:
            raise KeyboardInterrupt
        copied.append(str(target))
        real_copy(source, target)

    monkeypatch.setattr(hub.shutil, "copyfile", copy_then_stop)
    out = tmp_path / "pulled" / "out"
    with pytest.raises(KeyboardInterrupt):
        hub.download_to(REPO, out)
    assert copied and not out.exists()
    assert list((tmp_path / "pulled").iterdir()) == []


def test_download_to_existing_directory(
    hub_server: HubServer,
    pushed: str,
    artifact: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        hub.download_to(REPO, out)
    assert (out / "stale.txt").exists()
    hub.download_to(REPO, out, overwrite=True)
    assert artifact_files(out) == tree_bytes(artifact)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "hf_home", "out"]


def test_push_refuses_links_out_of_the_directory(
    hub_server: HubServer,
    artifact: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / "secret.txt").write_text("private")
    (artifact / "notes.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(errors.UnsafeRepoPathError, match="outside"):
        hub.push_directory(artifact, REPO, token=hub_server.token)
    assert hub_server.requests == []


# ------------------------------------------------------------------- the server itself


def test_server_resolve_answers_like_the_hub(hub_server: HubServer, pushed: str) -> None:
    import urllib.error
    import urllib.request

    url = f"{hub_server.endpoint}/{REPO}/resolve/main/images/heatmap.png"
    content = hub_server.files(REPO)["images/heatmap.png"]
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as response:
        assert response.headers["X-Repo-Commit"] == pushed
        assert response.headers["ETag"].strip('"') == git_blob_oid(content)
        assert int(response.headers["Content-Length"]) == len(content)
        assert response.read() == b""
    ranged = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(ranged) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 10-19/{len(content)}"
        assert response.read() == content[10:20]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{hub_server.endpoint}/{REPO}/resolve/main/missing.bin")
    assert caught.value.code == 404
    assert caught.value.headers["X-Error-Code"] == "EntryNotFound"
    assert caught.value.headers["X-Repo-Commit"] == pushed


def test_other_errors_are_translated_or_left_alone() -> None:
    for transport_error in (ConnectionRefusedError("refused"), TimeoutError("slow")):
        error = hub.translate_error(transport_error, repo_id=REPO)
        assert isinstance(error, errors.HubConnectionError) and "HF_ENDPOINT" in str(error)
    unsafe = hub.translate_error(ValueError("Invalid filename '../x'"), repo_id=REPO)
    assert isinstance(unsafe, errors.UnsafeRepoPathError)
    other = KeyError("unrelated")
    assert hub.translate_error(other, repo_id=REPO) is other
