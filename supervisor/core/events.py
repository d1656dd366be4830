"""Docker container events as the core understands them: which actions are watched, which fail a member at once.

One list serves the watcher (its server-side event filter) and health (which actions flip a verdict), so the two
cannot drift apart. ``PendingEvents`` is the watcher's queue between its reader and its worker, merged per container
and bounded, with the same lists deciding which actions are never merged away.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from supervisor.core.docker_json import ContainerEvent

#: Container event actions that can change what the supervisor knows (health_status arrives as "health_status: X").
WATCHED_ACTIONS: tuple[str, ...] = (
    "create",
    "start",
    "die",
    "stop",
    "kill",
    "oom",
    "pause",
    "unpause",
    "health_status",
    "destroy",
    "rename",
    "update",
)

#: Actions that fail a member at once: never dropped or merged away under an event storm.
FAIL_ACTIONS: frozenset[str] = frozenset({"die", "stop", "kill", "pause", "destroy", "oom", "health_status: unhealthy"})

#: Actions after which a member is eligible again once a probe confirms.
RECOVER_ACTIONS: frozenset[str] = frozenset({"start", "unpause", "restart", "health_status: healthy"})


# --- pending events, merged per container ------------------------------------------------------------------------

C = TypeVar("C")  # control items (connected, disconnected, stop...): opaque here, kept in arrival order
X = TypeVar("X")  # what a generation's events need to be handled (the adapter's client): opaque here


@dataclass(frozen=True)
class Batch(Generic[X]):
    """Containers with pending events, all of one connection generation, for the worker to handle in one round.

    ``containers`` lists each container once with its merged events in order; ``relist`` asks for a full relist
    after this batch because events were left out to stay within the bound (the relist is the truth they stood for).
    """

    generation: int
    context: X
    containers: tuple[tuple[str, tuple[ContainerEvent, ...]], ...]
    relist: bool = False


class _Container:
    """One container's pending actions: action -> its latest event, in order of each action's latest arrival."""

    __slots__ = ("actions", "attributes")

    def __init__(self) -> None:
        self.actions: dict[str, ContainerEvent] = {}
        self.attributes: Mapping[str, str] | None = None  # shared by successive events with equal attributes


class _Segment(Generic[X]):
    """The pending events of one generation between two control items."""

    __slots__ = ("context", "generation", "overflow", "plain", "urgent")

    def __init__(self, generation: int, context: X) -> None:
        self.generation = generation
        self.context = context
        self.urgent: dict[str, _Container] = {}  # with a pending failure, in arrival order of that failure
        self.plain: dict[str, _Container] = {}  # the others, in arrival order of their first pending event
        self.overflow = False

    def __len__(self) -> int:
        return len(self.urgent) + len(self.plain)


class PendingEvents(Generic[C, X]):
    """Events waiting for the worker, merged per container so that a storm takes bounded memory. Pure, not locked.

    Order: control items and generations keep their arrival order (a generation's events are never taken before the
    control item put ahead of them, nor after one put behind them). Within a generation the events of a container
    are merged: each action is kept once, at the place of its latest arrival, so the container's last action stays
    last and "die, start" keeps that order; its attributes are shared when unchanged. Containers with a pending
    failure action (FAIL_ACTIONS) are taken first, the others in arrival order of their first pending event.

    Bound: at most `max_containers` containers pending (each with at most `max_actions` actions). A container beyond
    it is not stored: the generation is marked for a relist (the batch that drains it says ``relist``), except that
    a failure evicts a container without one (the relist covers it) and only when every pending container has a
    failure, past twice the bound, is a failure left to the relist too (counted in ``failures_overflowed``).
    """

    def __init__(self, max_containers: int = 10_000, max_actions: int = 32) -> None:
        if max_containers < 1 or max_actions < len(FAIL_ACTIONS) + 1:
            raise ValueError("max_containers must be >= 1 and max_actions > the number of failure actions")
        self.max_containers = max_containers
        self.max_actions = max_actions
        self._items: collections.deque[C | _Segment[X]] = collections.deque()
        self._containers = 0  # pending containers over all segments
        self._events = 0  # pending (merged) events over all segments
        self.received = 0  # events added
        self.merged = 0  # events folded into a later one of the same container and action
        self.overflowed = 0  # events left to a relist by the bound
        self.failures_overflowed = 0

    # -- sizes ----------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Pending containers plus control items and pending relists (0 when there is nothing to take)."""
        others = sum(1 for item in self._items if not isinstance(item, _Segment) or (item.overflow and not item))
        return self._containers + others

    @property
    def pending_containers(self) -> int:
        return self._containers

    @property
    def pending_events(self) -> int:
        return self._events

    # -- in ---------------------------------------------------------------------------------------------------------

    def add_control(self, item: C) -> None:
        self._items.append(item)

    def add_event(self, generation: int, context: X, event: ContainerEvent) -> None:
        self.received += 1
        tail = self._items[-1] if self._items else None
        if not isinstance(tail, _Segment) or tail.generation != generation:
            tail = _Segment(generation, context)
            self._items.append(tail)
        segment: _Segment[X] = tail
        failure = event.action in FAIL_ACTIONS
        entry = segment.urgent.get(event.id) or segment.plain.get(event.id)
        if entry is None:
            entry = self._new_entry(segment, failure)
            if entry is None:
                return
            (segment.urgent if failure else segment.plain)[event.id] = entry
            self._containers += 1
        elif failure and event.id in segment.plain:
            del segment.plain[event.id]
            segment.urgent[event.id] = entry
        if entry.attributes is not None and entry.attributes == event.attributes:
            event = ContainerEvent(event.id, event.action, event.time_nano, entry.attributes)
        else:
            entry.attributes = event.attributes
        if entry.actions.pop(event.action, None) is not None:
            self.merged += 1
            self._events -= 1
        entry.actions[event.action] = event
        self._events += 1
        if len(entry.actions) > self.max_actions:
            oldest = next(action for action in entry.actions if action not in FAIL_ACTIONS)
            del entry.actions[oldest]
            self._events -= 1
            self.merged += 1

    def _new_entry(self, segment: _Segment[X], failure: bool) -> _Container | None:
        """Room for one more container in `segment`, or None (the event goes to the relist)."""
        if self._containers < self.max_containers:
            return _Container()
        segment.overflow = True
        self.overflowed += 1
        if not failure:
            return None
        if segment.plain:  # a failure takes the place of a container without one: the relist stands for that one
            victim = next(iter(segment.plain))
            self._events -= len(segment.plain.pop(victim).actions)
            self._containers -= 1
            return _Container()
        if self._containers < 2 * self.max_containers:
            return _Container()
        self.failures_overflowed += 1
        return None

    # -- out --------------------------------------------------------------------------------------------------------

    def take(self, max_containers: int) -> C | Batch[X] | None:
        """The next control item, or a batch of up to `max_containers` containers of the first generation; None
        when nothing is pending."""
        while self._items:
            head = self._items[0]
            if not isinstance(head, _Segment):
                self._items.popleft()
                return head
            segment: _Segment[X] = head
            entries = self._take_from(segment, max_containers, urgent_only=False)
            drained = not segment
            if drained:
                self._items.popleft()
            if entries or (drained and segment.overflow):
                return Batch(segment.generation, segment.context, entries, relist=drained and segment.overflow)
        return None

    def take_urgent(self, generation: int, max_containers: int) -> tuple[tuple[str, tuple[ContainerEvent, ...]], ...]:
        """Containers with a pending failure of `generation`, when its events are next in line (none otherwise)."""
        head = self._items[0] if self._items else None
        if not isinstance(head, _Segment) or head.generation != generation:
            return ()
        segment: _Segment[X] = head
        return self._take_from(segment, max_containers, urgent_only=True)

    def _take_from(
        self, segment: _Segment[X], limit: int, urgent_only: bool
    ) -> tuple[tuple[str, tuple[ContainerEvent, ...]], ...]:
        taken: list[tuple[str, tuple[ContainerEvent, ...]]] = []
        for source in (segment.urgent,) if urgent_only else (segment.urgent, segment.plain):
            while source and len(taken) < limit:
                container_id = next(iter(source))
                entry = source.pop(container_id)
                taken.append((container_id, tuple(entry.actions.values())))
                self._containers -= 1
                self._events -= len(entry.actions)
        return tuple(taken)
