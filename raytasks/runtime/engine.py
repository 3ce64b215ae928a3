"""The ``engine`` actor: one pool of executor actors per task type."""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle

from ..settings import Settings
from .actors import MANAGER, Executor, get


class Engine:
    """The ``engine`` actor: keeps one pool of executor actors per task type."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pools: dict[str, list[ActorHandle]] = {}
        self._adopt_existing()

    def _adopt_existing(self) -> None:
        """After a restart, take back the executors that outlived the old engine (by name)."""
        try:
            manager = ray.get_actor(MANAGER, namespace=self.settings.namespace)
            types = get(manager.types.remote(), 30)
        except Exception:  # no manager yet: nothing to adopt
            return
        for info in types:
            pool: list[ActorHandle] = []
            while True:
                try:
                    pool.append(ray.get_actor(f"executor:{info.name}:{len(pool)}",
                                              namespace=self.settings.namespace))
                except ValueError:
                    break
            if pool:
                self.pools[info.name] = pool

    def ensure_pool(self, task_type: str, workers: int | None = None) -> int:
        type_settings = self.settings.for_type(task_type)
        size = type_settings.workers if workers is None else workers
        assert size is not None
        pool = self.pools.setdefault(task_type, [])
        remote_executor: Any = ray.remote(Executor)
        while len(pool) < size:
            name = f"executor:{task_type}:{len(pool)}"
            pool.append(remote_executor.options(
                name=name, namespace=self.settings.namespace, lifetime="detached",
                get_if_exists=True, max_restarts=-1, max_task_retries=0,
                max_concurrency=4, num_cpus=type_settings.num_cpus,
                resources=type_settings.resources or None,
            ).remote(name, task_type, self.settings))
        return len(pool)

    def ensure_pools(self, task_types: list[str]) -> dict[str, int]:
        return {t: self.ensure_pool(t) for t in task_types}

    def stats(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for task_type, pool in self.pools.items():
            refs: list[Any] = [h.state.remote() for h in pool]
            for i, ref in enumerate(refs):
                try:
                    out.append(get(ref, 5))
                except Exception as exc:
                    out.append({"executor_id": f"executor:{task_type}:{i}",
                                "task_type": task_type, "error": type(exc).__name__})
        return out

    def shutdown(self) -> int:
        count = 0
        for pool in self.pools.values():
            for handle in pool:
                ray.kill(handle, no_restart=True)
                count += 1
        self.pools.clear()
        return count
