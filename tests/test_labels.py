"""Behaviour labels (zoo/labels.py): the rules on hand-made contact patterns, determinism,
the vocabulary, an end-to-end `qdzoo label` run on the bundled archive, and labels.json
travelling with a saved archive."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.cli import default_labels_path, main
from zoo import tasks
from zoo.archive_artifact import ARTIFACT_FILES, LABELS_NAME, label_examples, load_archive
from zoo.errors import TaskMismatchError
from zoo.labels import (
    _VERBS,
    GAITS,
    WORDS,
    Label,
    SpeedReference,
    _canonical,
    behaviour_features,
    features_from_steps,
    label_behaviours,
    paraphrases,
    text_parts,
)

DT = 0.008
FEET = ("right", "left")
REFERENCE = SpeedReference(slow=0.5, fast=1.5)


def episode(
    pattern: str, velocity: float, length: int | None = None, fell: bool = False
) -> tuple[np.ndarray, ...]:
    """Per-step records of one walker episode from a contact string: ``R`` right foot down,
    ``L`` left, ``B`` both, ``.`` none; the torso moves at ``velocity`` m/s; ``fell`` ends
    the episode (done) on the last character, ``length`` pads to a time limit."""
    steps = len(pattern)
    length = length or steps
    contacts = np.zeros((1, length, 2), bool)
    for t, ch in enumerate(pattern):
        contacts[0, t] = (ch in "RB", ch in "LB")
    x = (np.arange(1, length + 1) * DT * velocity)[None].astype(np.float32)
    done = np.zeros((1, length), bool)
    if fell:
        done[0, steps - 1 :] = True
    return contacts, x, np.zeros(1, np.float32), np.array([steps]), done


def label_of(pattern: str, velocity: float, **kwargs: object) -> Label:
    contacts, x, x0, valid, done = episode(pattern, velocity, **kwargs)  # type: ignore[arg-type]
    features = features_from_steps(contacts, x, x0, valid, done, DT, FEET)
    (label,) = label_behaviours(features, REFERENCE)
    return label


def words(text: str) -> set[str]:
    return set(text.replace(",", " ").split())


# ------------------------------------------------------------------------------ rules
WALK = "....." + "BBBLLLLLLLLBBBRRRRRRRR" * 5
RUN = "....." + "LLLLLL...RRRRRR..." * 5
HOP_LEFT = "....." + "LLLLLLL......" * 6
ONE_FOOT_LEFT = "....." + "L" * 90
SHUFFLE = "....." + "B" * 90


def test_alternating_contacts_with_double_support_are_a_walk() -> None:
    label = label_of(WALK, 1.0)
    assert label.parts["gait"] == "walk"
    assert label.text == "walk forward"
    assert label.features["alternations"] >= 2


def test_alternating_contacts_with_flight_phases_are_a_run() -> None:
    label = label_of(RUN, 2.0)
    assert label.parts["gait"] == "run"
    assert label.text == "quickly run forward"
    assert label.features["flight"] > 0.15


def test_one_foot_patterns_say_which_foot() -> None:
    assert label_of(ONE_FOOT_LEFT, 0.0).text == "balance on the left foot"
    assert label_of(ONE_FOOT_LEFT, 1.0).text == "slide forward on the left foot"
    assert label_of(HOP_LEFT, 0.45).text == "slowly hop forward on the left foot"
    right = ONE_FOOT_LEFT.replace("L", "R")
    assert label_of(right, 0.0).text == "balance on the right foot"


def test_both_feet_down_with_little_progress_is_a_shuffle() -> None:
    assert label_of(SHUFFLE, 0.4).text == "slowly shuffle forward"
    assert label_of(SHUFFLE, 0.0).text == "shuffle in place"


def test_dragging_a_foot_while_the_other_steps() -> None:
    drag = "....." + "RRRRBBBB" * 12  # the right foot never leaves the ground
    label = label_of(drag, 1.0)
    assert label.parts["gait"] == "drag"
    assert label.text == "move forward while dragging the right foot"


def test_early_termination_is_a_fall() -> None:
    label = label_of(WALK[:60], 1.0, length=100, fell=True)
    assert label.text.endswith(", then fall")
    assert label.parts["fall"] and label.features["fell"]
    assert label.features["steps"] == 60
    assert not label_of(WALK, 1.0).parts["fall"]


def test_negative_displacement_is_backward() -> None:
    label = label_of(WALK, -1.0)
    assert label.parts["direction"] == "backward"
    assert label.text == "walk backward"
    assert label.features["displacement"] < 0


def test_speed_adverbs_follow_the_reference() -> None:
    assert label_of(WALK, 0.4).parts["speed"] == "slowly"
    assert label_of(WALK, 1.0).parts["speed"] is None
    assert label_of(WALK, 1.6).parts["speed"] == "quickly"


def test_one_step_gaps_are_debounced_and_the_initial_drop_is_skipped() -> None:
    flicker = "." * 10 + ("L" * 9 + ".") * 9
    label = label_of(flicker, 0.0)
    assert label.features["settled"] == 90
    assert label.features["flight"] == pytest.approx(1 / 90, abs=1e-4)  # the last gap
    assert label.text == "balance on the left foot"


def test_episodes_of_one_elite_are_averaged() -> None:
    a = episode(WALK, 1.0)
    b = episode(WALK, 3.0)
    stacked = [np.concatenate([u, v]) for u, v in zip(a, b, strict=True)]
    features = features_from_steps(*stacked, DT, FEET, episodes=2)
    assert len(features) == 1
    assert features.velocity[0] == pytest.approx(2.0, rel=1e-5)


def test_other_tasks_are_refused_with_a_clear_error() -> None:
    task = tasks.make("point-maze")
    with pytest.raises(TaskMismatchError, match="walker2d-uni"):
        behaviour_features(task, None)


# ------------------------------------------------------------------- determinism, words
def test_same_rollout_same_label_and_paraphrases_deterministic_within_vocabulary() -> None:
    first = label_of(HOP_LEFT, 2.0, length=120, fell=True)
    again = label_of(HOP_LEFT, 2.0, length=120, fell=True)
    assert first == again
    para = paraphrases(first, 6, seed=3)
    assert para == paraphrases(first, 6, seed=3)
    assert len(set(para)) == 6
    assert paraphrases(first, 6, seed=4) != para
    assert all(words(p) <= WORDS for p in para)


def test_every_label_and_paraphrase_uses_the_vocabulary() -> None:
    feet = [None, ["on", "left"], ["mostly on", "right"], ["lifting", "left"]]
    feet += [["dragging", "right"], ["both", ""], ["on", "back"], ["lifting", "front"]]
    assert set(GAITS) == set(_VERBS)
    for gait, speed, direction, foot, fall in itertools.product(
        GAITS, [None, "slowly", "quickly"], ["forward", "backward", "in place"], feet, [0, 1]
    ):
        parts = {"speed": speed, "gait": gait, "direction": direction, "foot": foot, "fall": fall}
        for text in [_canonical(parts), *paraphrases(parts, 5, seed=0)]:
            assert words(text) <= WORDS, text
            assert not re.search(r"\s{2}|\s,|^\s|\s$", text), text


def test_text_parts_reads_back_every_label_and_paraphrase() -> None:
    feet = [None, ["on", "left"], ["mostly on", "right"], ["lifting", "left"]]
    feet += [["dragging", "right"], ["both", ""], ["on", "back"], ["lifting", "front"]]
    for gait, speed, direction, foot, fall in itertools.product(
        GAITS, [None, "slowly", "quickly"], ["forward", "backward", "in place"], feet, [False, True]
    ):
        parts = {"speed": speed, "gait": gait, "direction": direction, "foot": foot, "fall": fall}
        for text in [_canonical(parts), *paraphrases(parts, 6, seed=1)]:
            assert text_parts(text) == parts, text
    # a prompt naming fewer slots leaves the others unset
    assert text_parts("The agent bounces AHEAD!") == {
        "speed": None, "gait": "hop", "direction": "forward", "foot": None, "fall": False,
    }  # fmt: skip
    assert text_parts("stand on its left foot")["direction"] == "in place"


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow  # 158 walker2d rollouts
def test_label_command_on_the_bundled_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "labels.json"
    assert main(["label", "walker2d-uni-map-elites", "--out", str(out), "--cells", "4"]) == 0
    assert "labelled 4 elites" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["format"] == "qdzoo-labels" and data["task"] == "walker2d-uni"
    records = data["labels"]
    artifact = load_archive("walker2d-uni-map-elites")
    assert len(records) == 4
    assert len({r["cell"] for r in records}) == 4
    assert {r["cell"] for r in records} <= set(artifact.cells.tolist())
    for record in records:
        assert words(record["label"]) <= WORDS
        assert len(record["paraphrases"]) == 4
        assert all(words(p) <= WORDS for p in record["paraphrases"])
        assert record["parts"]["gait"] in GAITS
        assert record["features"]["steps"] <= 100
        assert not list(tmp_path.glob(".tmp-*"))


def test_default_labels_path(tmp_path: Path) -> None:
    assert default_labels_path(str(tmp_path)) == tmp_path / LABELS_NAME
    assert default_labels_path("me/walker") == Path("runs/labels/me--walker/labels.json")


def test_saving_an_archive_elsewhere_carries_its_labels(tmp_path: Path) -> None:
    assert LABELS_NAME in ARTIFACT_FILES
    artifact = load_archive("walker2d-uni-map-elites")
    source = artifact.save_pretrained(tmp_path / "a", plot=False)
    assert (source / LABELS_NAME).is_file()  # the bundled archive's labels came along
    card = (source / "README.md").read_text()
    # the card quotes the two most common of the archive's own labels
    common = Counter(r["label"] for r in json.loads((source / LABELS_NAME).read_text())["labels"])
    (first, _), (second, _) = common.most_common(2)
    assert f'`labels.json` describes every elite in words (e.g. "{first}", "{second}")' in card
    (source / LABELS_NAME).write_text('{"labels": []}\n')
    loaded = load_archive(source)
    target = loaded.save_pretrained(tmp_path / "b", plot=False)
    assert (target / LABELS_NAME).read_text() == '{"labels": []}\n'
    assert (
        "`labels.json` describes every elite in words, read" in (target / "README.md").read_text()
    )


def test_label_examples_of_a_labels_file(tmp_path: Path) -> None:
    path = tmp_path / LABELS_NAME
    assert label_examples(path) is None  # no file: the card says nothing about labels
    path.write_text("not json")
    assert label_examples(path) == []
    labels = ["hop forward", "slowly slide forward", "hop forward", "run forward", "run forward"]
    path.write_text(json.dumps({"labels": [{"cell": i, "label": t} for i, t in enumerate(labels)]}))
    assert label_examples(path) == ["hop forward", "run forward"]
    assert label_examples(path, count=5) == ["hop forward", "run forward", "slowly slide forward"]
