"""Docker container events as the core understands them: which actions are watched, which fail a member at once.

One list serves the watcher (its server-side event filter) and health (which actions flip a verdict), so the two
cannot drift apart.
"""

from __future__ import annotations

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
