"""What the suite starts and what each instance must end with, computed without the app.

The oracle re-states the app's arithmetic on purpose: a bug that changed both would otherwise go
unnoticed. Instance ``i`` gets kind ``KINDS[i % len(KINDS)]`` and random sizes from the seeded
generator, so a seed names one exact workload.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = ("chain", "fanout", "parent", "timer", "event", "entity")
"""The orchestrator functions of chaos/app, one per shape of work, that the kill scenario runs."""
DRAIN_KINDS = (
    "ledger",
    "chain",
    "ledger",
    "fanout",
    "ledger",
    "parent",
    "ledger",
    "timer",
    "event",
    "entity",
)
"""What the drain scenario runs: every kind, and ``ledger`` (whose activities write down each run and
take a while, so that drains find them running) for four in ten."""
MODULUS = 1_000_003
SHARED_COUNTERS = 4
"""Counters every ``entity`` instance signals; each ends with the sum of its signallers' seeds."""
EVENT_NAME = "go"


def step(value: int) -> int:
    """The app's activity."""
    return (value * 31 + 7) % MODULUS


def chain_output(seed: int, length: int) -> int:
    """What ``chain`` returns."""
    value = seed
    for _ in range(length):
        value = step(value)
    return value


@dataclass(frozen=True)
class InstanceSpec:
    """One orchestration the driver starts, with its input and the output it must complete with."""

    instance_id: str
    kind: str
    payload: dict[str, Any]
    expected: Any
    event_payload: int | None = None
    """The ``go`` event's payload, for ``event`` instances."""

    @property
    def child_id(self) -> str | None:
        """The sub-orchestration a ``parent`` starts."""
        return f"{self.instance_id}-child" if self.kind == "parent" else None


@dataclass
class Workload:
    """Every instance of a run and the entity states they must leave behind."""

    instances: list[InstanceSpec]
    entity_states: dict[str, int] = field(default_factory=dict)
    """Counter key → final value."""

    def ledger_keys(self) -> list[str]:
        """The ledger key of every activity task the ``ledger`` instances schedule."""
        return [
            f"{spec.instance_id}/{part}/{i}"
            for spec in self.instances
            if spec.kind == "ledger"
            for part, count in (("fan", spec.payload["width"]), ("chain", spec.payload["length"]))
            for i in range(count)
        ]

    def expected_children(self) -> dict[str, Any]:
        """Sub-orchestration ID → its expected output."""
        return {
            spec.child_id: chain_output(spec.payload["seed"], spec.payload["length"])
            for spec in self.instances
            if spec.child_id is not None
        }


def build_workload(count: int, rng: random.Random, kinds: tuple[str, ...] = KINDS) -> Workload:
    """``count`` instances of ``kinds`` in turn, with seeded sizes."""
    instances = [_spec(index, kinds[index % len(kinds)], rng) for index in range(count)]
    states: Counter[str] = Counter()
    for spec in instances:
        if spec.kind == "entity":
            seed = spec.payload["seed"]
            states[spec.payload["shared"]] += seed
            states[spec.payload["own"]] += 2 * seed
    return Workload(instances, dict(states))


def _spec(index: int, kind: str, rng: random.Random) -> InstanceSpec:
    instance_id = f"chaos-{index:05d}-{kind}"
    seed = rng.randrange(1, 10_000)
    if kind == "chain":
        length = rng.randint(3, 8)
        return InstanceSpec(instance_id, kind, {"seed": seed, "length": length}, chain_output(seed, length))
    if kind == "fanout":
        width = rng.randint(3, 10)
        expected = sum(step(seed + i) for i in range(width))
        return InstanceSpec(instance_id, kind, {"seed": seed, "width": width}, expected)
    if kind == "parent":
        length = rng.randint(2, 4)
        expected = step(chain_output(seed, length))
        return InstanceSpec(instance_id, kind, {"seed": seed, "length": length}, expected)
    if kind == "timer":
        seconds = rng.randint(2, 5)
        return InstanceSpec(instance_id, kind, {"seed": seed, "seconds": seconds}, step(seed))
    if kind == "ledger":
        width, length, pause = rng.randint(2, 6), rng.randint(2, 4), round(rng.uniform(0.5, 2.0), 2)
        expected = chain_output(sum(step(seed + i) for i in range(width)), length)
        sizes = {"seed": seed, "width": width, "length": length, "pause": pause}
        return InstanceSpec(instance_id, kind, sizes, expected)
    if kind == "event":
        payload = rng.randrange(1, 1000)
        return InstanceSpec(instance_id, kind, {"seed": seed}, step(seed + payload), event_payload=payload)
    shared = f"shared-{rng.randrange(SHARED_COUNTERS)}"
    spec = {"seed": seed, "shared": shared, "own": f"own-{index:05d}"}
    return InstanceSpec(instance_id, kind, spec, [seed, 2 * seed])
