"""Nodes being drained: their executors stop leasing and hand back what they run.

Before a node is removed on purpose (the autoscaler's idle or spot termination, KubeRay
scaling a worker group down, an operator's ``ray drain-node``), Ray's GCS marks it as
draining, with the deadline by which it goes. The engine looks every scaling round. An
executor on such a node is retired: it leases nothing more, and ends once what it ran is
reported. The manager asks its running attempts to save a checkpoint and stop before the
deadline (:meth:`raytasks.manager.work.WorkDesk.hand_back`); they go back to PENDING
without spending a retry and resume from their checkpoints on executors Ray places
elsewhere (it places nothing new on a draining node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

#: How long the engine waits for an executor to say which node it is on.
STATE_WAIT_S = 2.0


def draining_nodes() -> dict[str, float | None]:
    """The nodes Ray is draining: node id (hex) -> seconds until the node goes (None: no
    deadline was given)."""
    from ray._private.state import state

    now_ms = time.time() * 1000
    return {node: max(0.0, (deadline - now_ms) / 1000) if deadline else None
            for node, deadline in state.get_draining_nodes().items()}


async def on_nodes(handles: dict[str, Any], nodes: set[str]) -> dict[str, str]:
    """Which of ``handles`` (executor name -> handle) run on one of ``nodes``: name ->
    node. One that does not answer within ``STATE_WAIT_S`` is asked again next round."""
    names = list(handles)
    states = await asyncio.gather(
        *(asyncio.wait_for(handles[n].state.remote(), STATE_WAIT_S) for n in names),
        return_exceptions=True)
    return {name: state["node_id"] for name, state in zip(names, states, strict=True)
            if isinstance(state, dict) and state.get("node_id") in nodes}
