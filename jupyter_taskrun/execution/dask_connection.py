"""``SchedulerConnection``: the Dask executor's connection to its scheduler, kept alive.

Server side. It resolves where the scheduler is (an address, or a cluster built by a
factory, which it then owns and closes), connects in the background so the server
starts even while the scheduler is down, reports its state for ``GET /status``, and
reconnects after a scheduler loss, subscribing its topics again on every new scheduler
(a new scheduler knows nothing of earlier subscriptions). It runs no task: that is
``DaskExecutor`` (``dask_executor.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from traitlets.utils.importstring import import_item

from ..errors import TaskRunError

log = logging.getLogger(__name__)


class SchedulerConnection:
    """One asynchronous ``distributed.Client``, supervised; ``topics`` are re-subscribed on reconnect."""

    def __init__(
        self,
        scheduler_address: str,
        cluster_factory: str,
        *,
        connect_timeout: float,
        topics: dict[str, Callable[[Any], None]],
        log: logging.Logger = log,
    ):
        self.scheduler_address = scheduler_address
        self.cluster_factory = cluster_factory
        self.connect_timeout = connect_timeout
        self.topics = topics
        self.log = log
        self.client: Any = None
        self.cluster: Any = None
        self._owns_cluster = False
        #: starting, connecting, connected, reconnecting, unavailable, misconfigured, stopped
        self.status = "starting"
        self.error: str | None = None
        self.connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._comm_seen: Any = None
        self._stopped = False

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.ensure_future(self._supervise())

    def where(self) -> str:
        """The scheduler, for messages: its address, or the cluster factory's while none is known."""
        if self.scheduler_address:
            return self.scheduler_address
        addr = getattr(self.cluster, "scheduler_address", None) if self.cluster is not None else None
        return addr or f"the cluster from {self.cluster_factory}"

    async def _resolve_address(self) -> str:
        if self.scheduler_address:
            return self.scheduler_address
        if self.cluster is None:
            factory = import_item(self.cluster_factory.replace(":", "."))
            if inspect.iscoroutinefunction(factory):
                cluster = await factory()
            else:
                # a synchronous cluster (LocalCluster(), SLURMCluster()...) blocks while it
                # starts and runs its own loop thread: build it off the server's loop
                cluster = await asyncio.to_thread(factory)
                if inspect.isawaitable(cluster):
                    cluster = await cluster
            self.cluster = cluster
            self._owns_cluster = True
            self.log.info("taskrun: Dask cluster from %s: %r", self.cluster_factory, cluster)
        address = self.cluster if isinstance(self.cluster, str) else getattr(self.cluster, "scheduler_address", None)
        if not address:
            raise TaskRunError(f"{self.cluster_factory} returned {self.cluster!r}, which has no scheduler_address")
        return str(address)

    async def _connect(self) -> None:
        from distributed import Client

        if self.status == "starting":
            self.status = "connecting"  # later attempts keep saying "reconnecting"/"unavailable"
        address = await self._resolve_address()
        client = Client(address, asynchronous=True, set_as_default=False, timeout=self.connect_timeout)
        try:
            await asyncio.wait_for(client, self.connect_timeout + 5)
        except BaseException:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception:
                pass
            raise
        self.client = client
        self._subscribe(client)
        self.log.info("taskrun: connected to the Dask scheduler at %s", address)

    def _subscribe(self, client: Any) -> None:
        for topic, handler in self.topics.items():
            client.subscribe_topic(topic, handler)
        self._comm_seen = client.scheduler_comm

    def _resubscribe_if_new(self) -> None:
        if self.client is not None and self.client.scheduler_comm is not self._comm_seen:
            self._subscribe(self.client)  # reconnected between two supervisor checks

    async def _supervise(self) -> None:
        """Keep a connected client: report state, reconnect after scheduler loss."""
        delay = 0.5
        while not self._stopped:
            client = self.client
            if client is None:
                try:
                    await self._connect()
                    delay = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self.status = "unavailable"
                    self.error = f"cannot reach the Dask scheduler at {self.where()}: {type(e).__name__}: {e}"
                    self.connected.clear()
                    self.log.warning("taskrun: %s; retrying in %.1f s", self.error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                continue
            status = getattr(client, "status", "running")
            if status == "running":
                if client.scheduler_comm is not self._comm_seen:
                    self.log.info("taskrun: reconnected to the Dask scheduler at %s", self.where())
                    self._subscribe(client)
                if not self.connected.is_set():
                    self.status, self.error = "connected", None
                    self.connected.set()
            elif status in ("connecting", "newly-created"):
                if self.connected.is_set():
                    self.error = f"lost the connection to the Dask scheduler at {self.where()}; reconnecting"
                    self.log.warning("taskrun: %s", self.error)
                self.status = "reconnecting"
                self.connected.clear()
            else:  # closing/closed: the client gave up reconnecting; build a new one
                self.connected.clear()
                self.status = "unavailable"
                self.error = self.error or f"lost the Dask scheduler at {self.where()}"
                self.client = None
                try:
                    await client.close()
                except Exception:
                    pass
                continue
            await asyncio.sleep(0.1)

    async def ready_client(self, timeout: float, interrupted: asyncio.Event) -> Any | None:
        """The connected client, waiting up to ``timeout`` s for one (less once ``interrupted``
        is set); None if there is none by then."""
        if self.connected.is_set() and self.client is not None:
            self._resubscribe_if_new()
            return self.client
        waiter = asyncio.ensure_future(self.connected.wait())
        stopper = asyncio.ensure_future(interrupted.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if not self.connected.is_set() or self.client is None:
            return None
        self._resubscribe_if_new()
        return self.client

    def usable_client(self) -> Any | None:
        """The client if it is connected now (for stop requests: never wait for one)."""
        return self.client if self.client is not None and self.connected.is_set() else None

    async def close(self) -> None:
        """Stop supervising, close the client (releasing its keys), close an owned cluster."""
        self._stopped = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        client, self.client = self.client, None
        self.connected.clear()
        self.status = "stopped"
        if client is not None:
            try:
                # closing the client releases its keys: any worker-side run still alive
                # sees its key cancelled and kills its kernel
                await asyncio.wait_for(client.close(), 10)
            except Exception as e:
                self.log.warning("taskrun: closing the Dask client: %s", e)
        if self._owns_cluster and self.cluster is not None and not isinstance(self.cluster, str):
            cluster, self.cluster = self.cluster, None
            try:
                if getattr(cluster, "asynchronous", False):
                    await cluster.close()
                else:
                    await asyncio.to_thread(cluster.close)
            except Exception as e:
                self.log.warning("taskrun: closing the Dask cluster: %s", e)
