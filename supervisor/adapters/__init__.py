"""Thin adapters at the edges: they gather facts (Docker, netlink, files) and apply plans (keepalived, track files).

They decide nothing the core could decide; import-linter contracts in pyproject.toml order them among themselves.
"""
