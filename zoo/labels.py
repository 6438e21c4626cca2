"""Automatic behaviour labels: a short English description of each elite from its rollout.

No person in the loop: every elite is rolled out (one jitted, vmapped batch through the
episodic protocol and :func:`zoo.tasks.episodes.run_episodes`), a few measurable features
are read off the per-step torso position, feet contacts and termination flags, and fixed
rules turn them into a label such as ``"quickly hop forward on the left foot, then fall"``.
The same rollout always gives the same label; paraphrases for training text encoders come
from templates drawn with a seed::

    artifact = zoo.load_archive("runs/walker")        # a directory, catalog name or repo id
    records = label_archive(artifact, paraphrase_count=4, seed=0)
    write_labels("runs/walker/labels.json", records)  # beside the archive: published with it

or ``qdzoo label runs/walker`` (``--out FILE`` for a catalog name or a Hub repo id).

Supported tasks: the feet-contact tasks (:class:`zoo.tasks.locomotion.FeetContactTask`) of
``walker2d`` (feet ``right``, ``left``), ``hopper`` (one foot) and ``halfcheetah`` (feet
``back``, ``front``), i.e. ``walker2d-uni``, ``hopper-uni``, ``halfcheetah-uni``. Others
(``ant-uni`` with four feet, ``ant-omni``, ``point-maze``, ...) raise
:class:`zoo.errors.TaskMismatchError`.

Features (per episode; the rules read them from :class:`BehaviourFeatures`)
----------------------------------------------------------------------------

The robots start in the air and drop for ~10 steps, so the *settled* steps are the valid
steps from the first one at which some foot touches the ground (all valid steps when no
foot ever does). Contacts (:func:`zoo.tasks.locomotion.feet_contact` after every step) are
*debounced*: a one-step gap between two contacts of a foot counts as contact. Over the
settled steps (``m`` of them):

=====================  =================================================================
``contact[f]``         fraction of settled steps at which foot ``f`` touches the ground
``flight``             fraction with no foot on the ground
``double``             fraction with every foot on the ground (two-footed robots)
``flight_phases``      number of runs of >= 2 consecutive steps with no foot down
``alternations``       number of changes of the supporting foot between consecutive
                       single-support runs of >= 3 steps (left -> right -> left: 2)
``joint_landings``     landings (end of a flight phase) at which every foot touches down
                       within 2 steps of the first, as a fraction of all landings
``displacement``       torso x after the last valid step minus before the first step (m)
``velocity``           ``displacement / (valid steps * dt)``: mean x-velocity (m/s)
``fell``               the environment terminated the episode (the torso left its healthy
                       range), on any valid step, the last one included
=====================  =================================================================

Rules
-----

Direction: ``forward`` when ``displacement > max(0.2 m, 0.05 m/s * duration)``,
``backward`` when ``displacement < -that``, otherwise ``in place``.

Speed (only when the direction is not ``in place``): ``|velocity|`` against the reference
:class:`SpeedReference` (by default the terciles of ``|velocity|`` over the labelled elites
that move, see :func:`speed_reference`): ``slowly`` at or below the first tercile,
``quickly`` at or above the second, no adverb in between.

Gait, two-footed robots; ``lead`` is the foot with the larger contact fraction, ``other``
the second one; the first rule that holds wins:

====  ==========  ===============================================================
 #    gait        rule
====  ==========  ===============================================================
 1    shuffle     ``double >= 0.6`` and ``flight < 0.15`` (both feet mostly down)
                  and not ``quickly``
 2    run         ``alternations >= 2`` and ``flight >= 0.15`` and
                  ``flight_phases >= 2`` (alternating, with flight phases)
 3    walk        ``alternations >= 2`` and ``double >= 0.1`` (alternating, with
                  double support)
 4    hop         ``flight >= 0.2`` and ``flight_phases >= 1`` and either
                  one foot (``contact[other] <= 0.3`` and ``contact[lead] -
                  contact[other] >= 0.2``) or ``joint_landings >= 0.5`` (both feet
                  leave and land together)
 5    balance     ``contact[lead] >= 0.7`` and ``contact[other] <= 0.3``, ``in place``
 6    slide       ``contact[lead] >= 0.7`` and ``contact[other] <= 0.3``, moving
 7    leap        ``flight >= 0.3`` and ``flight_phases >= 2`` (feet mixed)
 8    lunge       ``alternations >= 1`` and moving (one long step onto the other
                  foot)
 9    drag        ``contact[lead] >= 0.75`` and ``contact[other] > 0.3``, moving
                  (the lead foot stays on the ground while the robot moves)
10    stumble     anything else
====  ==========  ===============================================================

A foot is *lifted* when ``contact <= 0.3``: after the drop, the robots land on both feet
for ~15 of the ~90 settled steps of a 100-step episode, so a foot held up for the rest of
it still shows ``contact`` ~0.17.

One-footed robots (hopper): hop (``flight >= 0.2``, ``flight_phases >= 1``), balance
(``contact >= 0.7`` in place), slide (``contact >= 0.7`` moving), else stumble.

Foot usage (two-footed robots; none for one foot):

- hop with the other foot lifted, balance, slide: ``on the <lead> foot``;
- drag: ``while dragging the <lead> foot``;
- hop on both feet (``joint_landings >= 0.5``, neither foot lifted): ``on both feet``;
- otherwise, the other foot lifted and ``contact[lead] - contact[other] >= 0.2``:
  ``while lifting the <other> foot``;
- otherwise, ``contact[lead] - contact[other] >= 0.4``: ``mostly on the <lead> foot``;
- otherwise nothing.

Outcome: ``then fall`` when ``fell``.

Text: ``[speed] verb [direction] [foot usage][, then fall]``, e.g. ``"slowly run forward,
then fall"``, ``"balance on the right foot"`` (balance omits ``in place``), ``"move forward
while dragging the left foot"`` (drag's verb is ``move``). :data:`VOCABULARY` lists every
phrase a label or a paraphrase (:func:`paraphrases`) can contain.

Several episodes per elite (``episodes > 1``, useful with a stochastic reset): fractions,
counts, displacement and velocity are averaged over the episodes; ``fell`` holds when at
least half of them fell.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from zoo.archive_artifact import LABELS_NAME
from zoo.errors import ConfigError, ShapeError, TaskMismatchError
from zoo.serialization import write_json
from zoo.tasks.episodes import run_episodes
from zoo.tasks.protocol import batched_policy, check_policy_population, population_size

__all__ = [
    "FEET_NAMES",
    "LABELS_NAME",
    "SUPPORTED_ENVS",
    "THRESHOLDS",
    "VOCABULARY",
    "WORDS",
    "BehaviourFeatures",
    "Label",
    "SpeedReference",
    "behaviour_features",
    "features_from_steps",
    "label_archive",
    "label_behaviours",
    "paraphrases",
    "speed_reference",
    "text_parts",
    "write_labels",
]


LABELS_FORMAT = "qdzoo-labels"
LABELS_VERSION = 1

FEET_NAMES: dict[str, tuple[str, ...]] = {
    "walker2d": ("right", "left"),  # zoo.tasks.locomotion.FEET: foot, foot_left
    "hopper": ("",),
    "halfcheetah": ("back", "front"),  # bfoot, ffoot
}
"""How the labels name the feet of each supported Brax env, in the task's foot order."""

SUPPORTED_ENVS = tuple(FEET_NAMES)

THRESHOLDS: dict[str, float] = {
    "in_place_distance": 0.2,  # m
    "in_place_speed": 0.05,  # m/s
    "shuffle_double": 0.6,
    "shuffle_flight": 0.15,
    "run_flight": 0.15,
    "run_flight_phases": 2,
    "alternations": 2,
    "walk_double": 0.1,
    "hop_flight": 0.2,
    "leap_flight": 0.3,
    "lifted": 0.3,  # a foot at or below this contact fraction is lifted
    "one_foot": 0.7,  # balance / slide: the lead foot at least this much down
    "one_foot_margin": 0.2,  # hop on one foot, lifting: lead - other at least this
    "drag": 0.75,
    "joint_landings": 0.5,
    "mostly": 0.4,
    "single_run": 3,  # steps of a single-support run that counts for alternations
    "flight_run": 2,  # steps of a flight phase
    "landing_window": 2,  # steps within which every foot lands for a joint landing
}
"""Every threshold of the rules (module docstring), recorded in the labels file."""

GAITS = ("shuffle", "run", "walk", "hop", "balance", "slide", "leap", "lunge", "drag", "stumble")

# ---------------------------------------------------------------------------------------
# Vocabulary and paraphrases
# ---------------------------------------------------------------------------------------

_VERBS: dict[str, tuple[tuple[str, str], ...]] = {  # (base, third person), canonical first
    "hop": (("hop", "hops"), ("bounce", "bounces")),
    "walk": (("walk", "walks"), ("step", "steps")),
    "run": (("run", "runs"), ("jog", "jogs")),
    "shuffle": (("shuffle", "shuffles"), ("scoot", "scoots")),
    "balance": (("balance", "balances"), ("stand", "stands")),
    "slide": (("slide", "slides"), ("glide", "glides")),
    "leap": (("leap", "leaps"), ("bound", "bounds")),
    "lunge": (("lunge", "lunges"), ("stride", "strides")),
    "drag": (("move", "moves"), ("limp", "limps")),
    "stumble": (("stumble", "stumbles"), ("stagger", "staggers")),
}
_SPEEDS = {"slowly": ("slowly", "gently", "at a slow pace"), "quickly": ("quickly", "fast")}
_DIRECTIONS = {
    "forward": ("forward", "ahead"),
    "backward": ("backward", "backwards"),
    "in place": ("in place", "on the spot"),
}
_FOOT_FORMS = {
    "on": ("on the {} foot", "on its {} foot"),
    "mostly on": ("mostly on the {} foot", "mainly on the {} foot"),
    "lifting": ("while lifting the {} foot", "with the {} foot raised"),
    "dragging": ("while dragging the {} foot", "dragging the {} foot"),
    "both": ("on both feet", "with both feet together"),
}
_FALLS = ((", then fall", ", then falls"), (" and then fall over", " and then falls over"))
_SUBJECTS = ("the robot", "the agent", "it")

_SIDES = sorted({side for names in FEET_NAMES.values() for side in names if side})


def _vocabulary() -> dict[str, tuple[str, ...]]:
    foot = [form for forms in _FOOT_FORMS.values() for form in forms]
    return {
        "speed": tuple(p for ps in _SPEEDS.values() for p in ps),
        "gait": tuple(v for forms in _VERBS.values() for pair in forms for v in pair),
        "direction": tuple(p for ps in _DIRECTIONS.values() for p in ps),
        "foot": tuple(
            dict.fromkeys(f.format(side) if "{}" in f else f for f in foot for side in _SIDES)
        ),
        "outcome": tuple(p.strip(" ,") for pair in _FALLS for p in pair),
        "subject": _SUBJECTS,
    }


VOCABULARY: dict[str, tuple[str, ...]] = _vocabulary()
"""Every phrase a label or a paraphrase can contain, by slot (speed, gait verb, direction,
foot usage, outcome, and the subjects of third-person paraphrases)."""

WORDS: frozenset[str] = frozenset(
    word for phrases in VOCABULARY.values() for p in phrases for word in p.split()
)
"""Every word of :data:`VOCABULARY` (a label or paraphrase, split on spaces with commas
removed, uses only these)."""


@dataclasses.dataclass(frozen=True)
class Label:
    """A label: its canonical text, the parts it was built from and the features behind it.

    Attributes:
        text: e.g. ``"quickly hop forward on the left foot, then fall"``.
        parts: ``speed`` (``"slowly"``, ``"quickly"`` or ``None``), ``gait`` (one of
            ``GAITS``), ``direction`` (``"forward"``, ``"backward"``, ``"in place"``),
            ``foot`` (``None`` or ``[usage, side]`` with usage ``on``, ``mostly on``,
            ``lifting``, ``dragging`` or ``both``), ``fall`` (bool).
        features: the scalar features of the elite (see the module docstring).
    """

    text: str
    parts: dict[str, Any]
    features: dict[str, Any]


def _foot_phrase(foot: Sequence[str] | None, choice: int) -> str:
    if not foot:
        return ""
    forms = _FOOT_FORMS[foot[0]]
    form = forms[choice % len(forms)]
    return form.format(foot[1]) if "{}" in form else form


def _render(
    parts: Mapping[str, Any],
    verb: int,
    speed: int,
    direction: int,
    foot: int,
    fall: int,
    template: int,
    subject: int = 0,
) -> str:
    """One wording of ``parts``: each int picks a synonym (modulo the choices)."""
    base, third = _VERBS[parts["gait"]][verb % len(_VERBS[parts["gait"]])]
    adverb = ""
    if parts["speed"]:
        options = _SPEEDS[parts["speed"]]
        adverb = options[speed % len(options)]
    where = ""
    if not (parts["gait"] == "balance" and parts["direction"] == "in place"):
        options = _DIRECTIONS[parts["direction"]]
        where = options[direction % len(options)]
    usage = _foot_phrase(parts["foot"], foot)
    ending = _FALLS[fall % len(_FALLS)] if parts["fall"] else ("", "")
    multiword = " " in adverb  # "at a slow pace" reads after the verb only
    if template == 0 and not multiword:  # canonical: adverb verb direction foot, fall
        words = [adverb, base, where, usage]
        tail = ending[0]
    elif template in (0, 1):
        words = [base, where, adverb, usage]
        tail = ending[0]
    elif template == 2:
        words = [base, where, usage, adverb]
        tail = ending[0]
    else:
        who = _SUBJECTS[subject % len(_SUBJECTS)]
        words = (
            [who, third, where, adverb, usage] if multiword else [who, third, adverb, where, usage]
        )
        tail = ending[1]
    return " ".join(w for w in words if w) + tail


def _canonical(parts: Mapping[str, Any]) -> str:
    return _render(parts, 0, 0, 0, 0, 0, 0)


def paraphrases(label: Label | Mapping[str, Any], k: int, seed: int = 0) -> list[str]:
    """``k`` paraphrases of a label, the same for the same label and ``seed``.

    Drawn without replacement from every combination of template (adverb first or later,
    a third-person sentence "the robot hops ..."), verb synonym, speed and direction
    synonyms, foot-usage form and fall phrase; when fewer exist than ``k``, they repeat
    in the drawn order. Every word is in :data:`WORDS`.

    Args:
        label: a :class:`Label` or its ``parts`` dict.
        k: how many (>= 0).
        seed: any int; the draw also depends on the label (``crc32`` of its text).
    """
    if k < 0:
        raise ConfigError(f"paraphrases: k must be >= 0, given {k}")
    parts = label.parts if isinstance(label, Label) else dict(label)
    combos = itertools.product(range(2), range(3), range(2), range(2), range(2), range(4), range(3))
    texts = sorted({_render(parts, *c) for c in combos})
    rng = random.Random(zlib.crc32(_canonical(parts).encode()) ^ (int(seed) & 0xFFFFFFFF))
    rng.shuffle(texts)
    return [texts[i % len(texts)] for i in range(k)]


_FOOT_ORDER = ("mostly on", "dragging", "lifting", "both", "on")  # longest phrases first


def text_parts(text: str) -> dict[str, Any]:
    """The parts a text in the labels' vocabulary (:data:`VOCABULARY`) names: a label, one
    of its :func:`paraphrases`, or a prompt worded the same way.

    The inverse of the rendering, slot by slot: ``gait`` from the first gait verb (or its
    synonym: "bounces" is ``hop``, "moves" / "limps" are ``drag``), ``speed``, ``direction``
    (``"in place"`` for a ``balance`` that names none, as labels leave it out), ``foot``
    (``[usage, side]``, ``["both", ""]``) and ``fall``. A slot the text does not name is
    ``None`` (``fall``: ``False``); words outside the vocabulary are ignored.

    >>> text_parts("the robot bounces ahead on its left foot, then falls")
    {'speed': None, 'gait': 'hop', 'direction': 'forward', 'foot': ['on', 'left'], 'fall': True}
    """
    words = "".join(c if c.isalpha() else " " for c in str(text).lower()).split()
    joined = f" {' '.join(words)} "
    verbs = {v: gait for gait, forms in _VERBS.items() for pair in forms for v in pair}
    gait = next((verbs[w] for w in words if w in verbs), None)
    speed = next(
        (
            name
            for name, phrases in _SPEEDS.items()
            if any(f" {phrase} " in joined for phrase in phrases)
        ),
        None,
    )
    direction = next(
        (
            name
            for name, phrases in _DIRECTIONS.items()
            if any(f" {phrase} " in joined for phrase in phrases)
        ),
        None,
    )
    if direction is None and gait == "balance":
        direction = "in place"
    foot: list[str] | None = None
    for usage in _FOOT_ORDER:
        for form in _FOOT_FORMS[usage]:
            sides = _SIDES if "{}" in form else [""]
            side = next((s for s in sides if f" {form.format(s)} " in joined), None)
            if side is not None:
                foot = [usage, side]
                break
        if foot is not None:
            break
    fall = "fall" in words or "falls" in words
    return {"speed": speed, "gait": gait, "direction": direction, "foot": foot, "fall": fall}


# ---------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BehaviourFeatures:
    """The features of ``B`` elites (one row each), see the module docstring.

    Attributes:
        feet: the feet names of the labels (e.g. ``("right", "left")``).
        contact: ``[B, feet]`` contact fractions over the settled steps.
        flight, double: ``[B]`` fractions of settled steps with no / every foot down.
        flight_phases, alternations: ``[B]`` counts (means over episodes).
        joint_landings: ``[B]`` fraction of landings on every foot at once.
        displacement: ``[B]`` torso x displacement (m); ``velocity`` ``[B]`` its mean rate.
        duration: ``[B]`` seconds of valid steps; ``steps`` ``[B]`` valid steps.
        settled: ``[B]`` settled steps.
        fell: ``[B]`` bool, the episode was terminated (majority over episodes).
        episode_length: the time limit of the rollouts.
    """

    feet: tuple[str, ...]
    contact: np.ndarray
    flight: np.ndarray
    double: np.ndarray
    flight_phases: np.ndarray
    alternations: np.ndarray
    joint_landings: np.ndarray
    displacement: np.ndarray
    velocity: np.ndarray
    duration: np.ndarray
    steps: np.ndarray
    settled: np.ndarray
    fell: np.ndarray
    episode_length: int

    def __len__(self) -> int:
        return int(self.flight.shape[0])

    def row(self, i: int) -> dict[str, Any]:
        """The features of elite ``i`` as a JSON-able dict (floats rounded to 4 digits)."""
        r = lambda x: round(float(x), 4)  # noqa: E731
        out: dict[str, Any] = {
            f"contact_{name or 'foot'}": r(self.contact[i, j]) for j, name in enumerate(self.feet)
        }
        for name in ("flight", "double", "flight_phases", "alternations", "joint_landings"):
            out[name] = r(getattr(self, name)[i])
        out.update(
            displacement=r(self.displacement[i]),
            velocity=r(self.velocity[i]),
            duration=r(self.duration[i]),
            steps=r(self.steps[i]),
            settled=r(self.settled[i]),
            fell=bool(self.fell[i]),
        )
        return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, length)`` of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def _episode(
    contacts: np.ndarray, displacement: float, steps: int, fell: bool, dt: float
) -> dict[str, Any]:
    """Features of one episode from its valid steps' contacts ``[steps, feet]``."""
    t = THRESHOLDS
    c = contacts.astype(bool)
    feet = c.shape[1]
    if c.shape[0] >= 3:  # debounce: fill one-step gaps
        gap = ~c[1:-1] & c[:-2] & c[2:]
        c = c.copy()
        c[1:-1] |= gap
    down = np.nonzero(c.any(axis=1))[0]
    c = c[int(down[0]) :] if down.size else c
    m = max(c.shape[0], 1)
    count = c.sum(axis=1)
    no_foot = count == 0
    flights = [r for r in _runs(no_foot) if r[1] >= t["flight_run"]]
    single = np.where(count == 1, np.argmax(c, axis=1), -1)
    supports = []
    for foot in range(feet):
        supports += [(s, foot) for s, n in _runs(single == foot) if n >= t["single_run"]]
    order = [foot for _, foot in sorted(supports)]
    alternations = sum(a != b for a, b in itertools.pairwise(order))
    landings = [s + n for s, n in flights if s + n < c.shape[0]]
    joint = 0
    window = int(t["landing_window"])
    for s in landings:
        seen = c[s : s + window + 1].any(axis=0)
        joint += bool(seen.all())
    duration = steps * dt
    return {
        "contact": c.mean(axis=0) if c.shape[0] else np.zeros(feet),
        "flight": float(no_foot.sum() / m),
        "double": float((count == feet).sum() / m) if feet > 1 else 0.0,
        "flight_phases": float(len(flights)),
        "alternations": float(alternations),
        "joint_landings": float(joint / len(landings)) if landings else 0.0,
        "displacement": float(displacement),
        "velocity": float(displacement / duration) if duration > 0 else 0.0,
        "duration": float(duration),
        "steps": float(steps),
        "settled": float(c.shape[0]),
        "fell": bool(fell),
    }


def features_from_steps(
    contacts: np.ndarray,
    x: np.ndarray,
    x0: np.ndarray,
    valid_steps: np.ndarray,
    done: np.ndarray,
    dt: float,
    feet: Sequence[str],
    episode_length: int | None = None,
    episodes: int = 1,
) -> BehaviourFeatures:
    """Features from per-step records of ``B * episodes`` episodes (episode-major: episode
    ``e`` of elite ``i`` is row ``e * B + i``).

    Args:
        contacts: ``[N, T, feet]`` bool, feet touching the ground after each step.
        x: ``[N, T]`` torso x after each step; ``x0``: ``[N]`` torso x before the first.
        valid_steps: ``[N]`` valid steps of each episode (steps from ``valid_steps`` on are
            ignored).
        done: ``[N, T]`` the environment's termination flag after each step.
        dt: seconds per step.
        feet: the feet names (``len(feet)`` must match the last axis of ``contacts``).
        episode_length: the time limit (default ``T``).
        episodes: episodes per elite (averaged).
    """
    contacts, x, x0 = np.asarray(contacts), np.asarray(x), np.asarray(x0)
    valid_steps, done = np.asarray(valid_steps), np.asarray(done)
    if contacts.ndim != 3 or contacts.shape[2] != len(feet) or x.shape != contacts.shape[:2]:
        raise ShapeError(
            f"expected contacts [N, T, {len(feet)}] and x [N, T], given {contacts.shape} and "
            f"{x.shape}"
        )
    n = contacts.shape[0]
    if episodes < 1 or n % episodes:
        raise ConfigError(f"{n} episodes cannot be split into groups of episodes={episodes}")
    rows = []
    for i in range(n):
        steps = int(valid_steps[i])
        if steps < 1:
            raise ShapeError(f"episode {i} has no valid step (valid_steps={steps})")
        rows.append(
            _episode(
                contacts[i, :steps],
                float(x[i, steps - 1] - x0[i]),
                steps,
                bool(np.any(done[i, :steps])),
                dt,
            )
        )
    batch = n // episodes

    def gather(name: str) -> np.ndarray:
        values = np.asarray([r[name] for r in rows], np.float64)
        return values.reshape(episodes, batch, *values.shape[1:]).mean(axis=0)

    return BehaviourFeatures(
        feet=tuple(feet),
        contact=gather("contact"),
        flight=gather("flight"),
        double=gather("double"),
        flight_phases=gather("flight_phases"),
        alternations=gather("alternations"),
        joint_landings=gather("joint_landings"),
        displacement=gather("displacement"),
        velocity=gather("velocity"),
        duration=gather("duration"),
        steps=gather("steps"),
        settled=gather("settled"),
        fell=gather("fell") >= 0.5,
        episode_length=int(episode_length or contacts.shape[1]),
    )


def check_labelled_task(task: Any) -> tuple[str, ...]:
    """The feet names of ``task``; :class:`TaskMismatchError` unless the labeller knows it."""
    from zoo.tasks.locomotion import FeetContactTask

    env = getattr(task, "env_name", None)
    if not isinstance(task, FeetContactTask) or env not in FEET_NAMES:
        name = getattr(getattr(task, "spec", None), "name", type(task).__name__)
        raise TaskMismatchError(
            f"behaviour labels are defined for the feet-contact locomotion tasks of "
            f"{', '.join(SUPPORTED_ENVS)} (walker2d-uni, hopper-uni, halfcheetah-uni), given "
            f"task {name!r}; its gait cannot be read from two or fewer feet contacts. Label an "
            "archive of one of those tasks"
        )
    return FEET_NAMES[env]


_ROLLOUTS: dict[tuple[int, int], Any] = {}


def _rollout_fn(task: Any, episode_length: int) -> Any:
    """The jitted rollout of ``task`` (cached per task object and episode length)."""
    cache_key = (id(task), episode_length)
    if cache_key not in _ROLLOUTS:
        from zoo.tasks.locomotion import feet_contact

        feet = jax.vmap(lambda ps: feet_contact(ps, task.foot_links))

        def record(state: Any) -> tuple[Any, Any, Any]:
            return feet(state.pipeline_state), state.pipeline_state.x.pos[:, 0, 0], state.done

        def rollout(genomes: Any, key: PRNGKeyArray) -> tuple[Any, ...]:
            state = task.reset(key, population_size(genomes))
            policies = batched_policy(genomes)
            result = run_episodes(
                task, lambda o, t: policies(o), state, episode_length, record=record
            )
            contacts, x, done = result.records
            return contacts, x, state.pipeline_state.x.pos[:, 0, 0], result.valid_steps, done

        _ROLLOUTS.clear()  # one task at a time: keep compiled functions from piling up
        _ROLLOUTS[cache_key] = (task, eqx.filter_jit(rollout))
    return _ROLLOUTS[cache_key][1]


def behaviour_features(
    task: Any,
    genomes: Any,
    key: PRNGKeyArray | None = None,
    *,
    episodes: int = 1,
    episode_length: int | None = None,
) -> BehaviourFeatures:
    """Roll out a population once (``episodes`` episodes each) and read its features.

    One jitted, vmapped batch of ``B * episodes`` episodes through the task's episodic
    protocol (:func:`zoo.tasks.episodes.run_episodes` with a per-step ``record`` of feet
    contacts, torso x and the termination flag), so the episodes are those
    :meth:`Task.evaluate` runs.

    Args:
        task: a supported feet-contact task (see the module docstring).
        genomes: ``B`` policies (leading batch axis on every array leaf).
        key: reset key (default ``jax.random.key(0)``; ignored by a deterministic reset).
        episodes: episodes per policy (>= 1); useful with a stochastic reset.
        episode_length: steps per episode (default: the task's).

    Raises:
        TaskMismatchError: an unsupported task or policies that do not fit it.
        ConfigError: ``episodes`` or ``episode_length`` < 1.
    """
    feet = check_labelled_task(task)
    check_policy_population(genomes, task.spec)
    if int(episodes) < 1:
        raise ConfigError(f"episodes must be >= 1 (rollouts per elite), given {episodes}")
    length = int(episode_length or task.spec.episode_length)
    if length < 1:
        raise ConfigError(f"episode_length must be >= 1, given {episode_length}")
    if episodes > 1:
        genomes = jax.tree_util.tree_map(
            lambda x: jnp.concatenate([x] * int(episodes)) if eqx.is_array(x) else x, genomes
        )
    key = jax.random.key(0) if key is None else key
    contacts, x, x0, valid, done = jax.device_get(_rollout_fn(task, length)(genomes, key))
    return features_from_steps(
        contacts, x, x0, valid, done, float(task.env.dt), feet, length, int(episodes)
    )


# ---------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpeedReference:
    """``|velocity|`` at or below ``slow`` is ``slowly``, at or above ``fast`` ``quickly``."""

    slow: float
    fast: float


def speed_reference(features: BehaviourFeatures) -> SpeedReference:
    """The terciles of ``|velocity|`` over the elites of ``features`` that move (all of them
    when none moves)."""
    speed = np.abs(features.velocity)
    moving = speed[_directions(features) != "in place"]
    values = moving if moving.size else speed
    if not values.size:
        return SpeedReference(0.0, 0.0)
    slow, fast = np.quantile(values, [1 / 3, 2 / 3])
    return SpeedReference(float(slow), float(fast))


def _directions(features: BehaviourFeatures) -> np.ndarray:
    t = THRESHOLDS
    limit = np.maximum(t["in_place_distance"], t["in_place_speed"] * features.duration)
    d = features.displacement
    return np.where(d > limit, "forward", np.where(d < -limit, "backward", "in place"))


def _gait(
    f: dict[str, Any], contact: np.ndarray, direction: str, speed: str | None
) -> tuple[str, tuple[str, ...] | None, int, int]:
    """``(gait, foot usage, lead index, other index)`` by the ordered rules."""
    t = THRESHOLDS
    moving = direction != "in place"
    if contact.shape[0] == 1:
        if f["flight"] >= t["hop_flight"] and f["flight_phases"] >= 1:
            return "hop", None, 0, 0
        if contact[0] >= t["one_foot"]:
            return ("slide" if moving else "balance"), None, 0, 0
        return "stumble", None, 0, 0
    order = np.argsort(-contact, kind="stable")
    lead, other = int(order[0]), int(order[1])
    lifted = contact[other] <= t["lifted"]
    one_foot = lifted and contact[lead] - contact[other] >= t["one_foot_margin"]
    if f["double"] >= t["shuffle_double"] and f["flight"] < t["shuffle_flight"]:
        if speed != "quickly":
            return "shuffle", None, lead, other
    alternating = f["alternations"] >= t["alternations"]
    flighty = f["flight"] >= t["run_flight"] and f["flight_phases"] >= t["run_flight_phases"]
    if alternating and flighty:
        return "run", None, lead, other
    if alternating and f["double"] >= t["walk_double"]:
        return "walk", None, lead, other
    if f["flight"] >= t["hop_flight"] and f["flight_phases"] >= 1:
        if one_foot:
            return "hop", ("on",), lead, other
        if f["joint_landings"] >= t["joint_landings"]:
            return "hop", ("both",), lead, other
    if contact[lead] >= t["one_foot"] and lifted:
        return ("slide" if moving else "balance"), ("on",), lead, other
    if f["flight"] >= t["leap_flight"] and f["flight_phases"] >= 2:
        return "leap", None, lead, other
    if f["alternations"] >= 1 and moving:
        return "lunge", None, lead, other
    if contact[lead] >= t["drag"] and not lifted and moving:
        return "drag", ("dragging",), lead, other
    return "stumble", None, lead, other


def label_behaviours(
    features: BehaviourFeatures, reference: SpeedReference | None = None
) -> list[Label]:
    """One :class:`Label` per elite of ``features`` by the rules of the module docstring.

    Args:
        features: from :func:`behaviour_features` (or :func:`features_from_steps`).
        reference: the speed thresholds; default :func:`speed_reference` of ``features``.
    """
    reference = reference or speed_reference(features)
    directions = _directions(features)
    t = THRESHOLDS
    labels = []
    for i in range(len(features)):
        f = features.row(i)
        direction = str(directions[i])
        speed = None
        if direction != "in place":
            s = abs(float(features.velocity[i]))
            speed = "slowly" if s <= reference.slow else "quickly" if s >= reference.fast else None
        contact = np.asarray(features.contact[i], np.float64)
        gait, usage, lead, other = _gait(f, contact, direction, speed)
        foot: list[str] | None = None
        names = features.feet
        if len(names) > 1:
            if usage == ("on",):
                foot = ["on", names[lead]]
            elif usage == ("dragging",):
                foot = ["dragging", names[lead]]
            elif usage == ("both",):
                foot = ["both", ""]
            elif contact[other] <= t["lifted"] and (
                contact[lead] - contact[other] >= t["one_foot_margin"]
            ):
                foot = ["lifting", names[other]]
            elif contact[lead] - contact[other] >= t["mostly"]:
                foot = ["mostly on", names[lead]]
        parts = {
            "speed": speed,
            "gait": gait,
            "direction": direction,
            "foot": foot,
            "fall": bool(features.fell[i]),
        }
        labels.append(Label(_canonical(parts), parts, f))
    return labels


# ---------------------------------------------------------------------------------------
# Archives and files
# ---------------------------------------------------------------------------------------


def label_archive(
    artifact: Any,
    *,
    cells: Sequence[int] | np.ndarray | None = None,
    key: PRNGKeyArray | None = None,
    episodes: int = 1,
    episode_length: int | None = None,
    paraphrase_count: int = 4,
    seed: int = 0,
    reference: SpeedReference | None = None,
) -> list[dict[str, Any]]:
    """Label the elites of an archive artifact; one JSON-able record per elite.

    Args:
        artifact: an :class:`zoo.archive_artifact.ArchiveArtifact`.
        cells: the cells to label (default every elite, ascending).
        key: reset key (default ``jax.random.key(0)``).
        episodes, episode_length: see :func:`behaviour_features`.
        paraphrase_count: paraphrases per record (:func:`paraphrases` with ``seed``).
        seed: seed of the paraphrases.
        reference: speed thresholds (default: terciles over the labelled elites).

    Returns:
        Records ``{"cell", "label", "parts", "paraphrases", "features", "fitness",
        "descriptors", "speed_reference"}`` in the order of ``cells`` (``speed_reference``:
        the ``slow`` and ``fast`` thresholds of ``|velocity|`` in m/s that were used).
    """
    all_cells = artifact.cells
    cells = all_cells if cells is None else np.asarray(cells, np.int64).reshape(-1)
    missing = sorted(set(cells.tolist()) - set(all_cells.tolist()))
    if missing:
        raise ConfigError(
            f"cells {missing[:5]} hold no elite; pick among the {len(all_cells)} occupied "
            "cells (artifact.cells)"
        )
    if not cells.size:
        return []
    task = artifact.make_task()
    features = behaviour_features(
        task, artifact.genomes(cells), key, episodes=episodes, episode_length=episode_length
    )
    reference = reference or speed_reference(features)
    labels = label_behaviours(features, reference)
    speeds = {"slow": round(reference.slow, 4), "fast": round(reference.fast, 4)}
    fitness, descriptors = np.asarray(artifact.archive.fitness), artifact.archive.descriptors
    descriptors = np.asarray(descriptors)
    return [
        {
            "cell": int(cell),
            "label": label.text,
            "parts": label.parts,
            "paraphrases": paraphrases(label, paraphrase_count, seed),
            "features": label.features,
            "fitness": round(float(fitness[cell]), 4),
            "descriptors": [round(float(v), 4) for v in descriptors[cell]],
            "speed_reference": speeds,
        }
        for cell, label in zip(cells.tolist(), labels, strict=True)
    ]


def write_labels(path: str | Path, records: Sequence[Mapping[str, Any]], **metadata: Any) -> Path:
    """Write the labels file (JSON, atomically) and return its path.

    The file holds ``format``, ``version``, ``thresholds``, the given ``metadata`` (e.g.
    the archive's name and the rollout settings) and ``labels``: the records of
    :func:`label_archive`, one per elite.
    """
    path = Path(path)
    data = {
        "format": LABELS_FORMAT,
        "version": LABELS_VERSION,
        **metadata,
        "thresholds": THRESHOLDS,
        "labels": [dict(r) for r in records],
    }
    write_json(path, data)
    return path
