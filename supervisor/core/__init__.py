"""The pure core: settings, labels, the desired state, the plan and its rendering, health decisions.

Nothing here touches the outside world: no Docker, no netlink, no processes, no sockets, no threads. Every function
takes plain data and returns plain data, so the whole decision logic is tested without a host. An import-linter
contract in pyproject.toml keeps it that way.
"""
