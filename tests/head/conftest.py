"""One real ``ray start --head`` cluster for the tests that use Ray as its users do: notebooks
over the Ray client, jobs through the Jobs API, the deploy manifests' entrypoints."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import LocalHead


@pytest.fixture(scope="package")
def ray_head() -> Iterator[LocalHead]:
    """A token-auth head for tests/head (client server, dashboard, Jobs API).

    Package-scoped: it is stopped before the other tests run, so a client there that joins
    with "auto" finds the one cluster it means.
    """
    head = LocalHead(num_cpus=2).start()
    try:
        yield head
    finally:
        head.stop()


def client_env(head: LocalHead, namespace: str, data_dir: str, **extra: str) -> dict[str, str]:
    """A client process's environment, without RAY_AUTH_MODE: raytasks must arrange it."""
    env = head.client_env(RAYTASKS_NAMESPACE=namespace, RAYTASKS_DATA_DIR=data_dir)
    env.pop("RAY_AUTH_MODE", None)
    return {**env, **extra}
