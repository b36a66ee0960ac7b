"""Joining a Ray cluster, for the engines that run our work as Ray tasks and actors
(``curriculum index --engine ray``, ``curriculum curate --engine ray``).

Ray is an optional dependency (``pip install 'curriculum-loader[ray]'``); the cluster's nodes need
this package installed and the inputs (shards, stores, models) at the same path or URL as on the
driver.
"""

from __future__ import annotations

from typing import Any


def ray_module() -> Any:
    """The ``ray`` package, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError("the ray engine needs Ray: pip install 'curriculum-loader[ray]'") \
            from error
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://head:10001``), or start a local
    one when ``address`` is ``None``; a Ray already initialized in this process is used as it is.
    Returns whether this call started the connection (and so should end it)."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address)  # ray:// (Ray Client) takes few other options
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
    return True


def cluster_cpus() -> int:
    """CPUs of the connected cluster (at least 1)."""
    return max(1, int(ray_module().cluster_resources().get("CPU", 1)))
