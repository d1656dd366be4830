"""docker-keepalived: a supervisor that keeps virtual IPs on the host whose front end answers.

Data flows one way: watch (docker_watch) -> state (snapshot, labels, model) -> render -> apply (keepalived),
with health (health) on the side. The pure core (settings, validate, snapshot, labels, model, render) imports
no adapter; an import-linter contract in pyproject.toml keeps it that way.
"""

__version__ = "0.1.0"
