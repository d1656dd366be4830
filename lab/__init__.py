"""A lab of simulated hosts on one machine, for the tests, the benchmarks and the demo (see DESIGN.md).

``engine``: the local test image, a Docker client, polling with a deadline. ``hosts``: simulated hosts as containers
on internal Docker networks, front ends (also behind Rancher-style DNAT), supervisors and a client.
"""
