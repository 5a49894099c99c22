"""Calling a ROS 2 service so that its reply cannot be lost to discovery.

``Client.wait_for_service`` returns once the client has matched the server's endpoints; the server may not yet have
matched the client's reply reader. Fast DDS then waits the reply writer's ``max_blocking_time`` (100 ms) for that
match in ``rmw_send_response`` and, failing it, drops the reply (rclpy 9.x warns "failed to send response
(timeout): client will not receive response" in the server's process and carries on). On a loaded machine discovery
takes longer than 100 ms, the server has acted on the request, and the caller waits for a reply that never comes.

``ServiceCaller`` proves the reply path before the first real request: it sends a probe that changes nothing
(an empty parameter list, a lifecycle transition label that does not exist) until one is answered. Only the probe
is ever repeated; the real request is sent once.
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

from rclpy.client import Client
from rclpy.node import Node
from rclpy.task import Future

RequestT = TypeVar("RequestT")


class ServiceReplyTimeout(TimeoutError):
    """The service did not appear, or did not answer within the time given."""


class ServiceCaller(Generic[RequestT]):
    """One client of ``name`` on ``node``; an executor must spin ``node`` on another thread."""

    def __init__(self, node: Node, srv_type: Any, name: str, *, probe: RequestT, probe_period_s: float = 1.0) -> None:
        self._node = node
        self._name = name
        self._client: Client[Any, Any] = node.create_client(srv_type, name)
        self._probe = probe
        self._probe_period_s = probe_period_s
        self._ready = False

    def call(self, request: RequestT, *, timeout_s: float = 10.0) -> Any:
        """The reply to ``request``, sent once the reply path is proven; ServiceReplyTimeout if none."""
        end = time.monotonic() + timeout_s
        if not self._ready:
            self._prove_reply_path(end)
        future = self._client.call_async(request)
        if not _wait(future, end):
            self._client.remove_pending_request(future)
            raise ServiceReplyTimeout(f"{self._name}: no reply within {timeout_s:g} s")
        return future.result()

    def _prove_reply_path(self, end: float) -> None:
        if not self._client.wait_for_service(timeout_sec=max(0.0, end - time.monotonic())):
            raise ServiceReplyTimeout(f"{self._name}: the service did not appear")
        while True:
            future = self._client.call_async(self._probe)
            if _wait(future, min(end, time.monotonic() + self._probe_period_s)):
                self._ready = True
                return
            self._client.remove_pending_request(future)
            if time.monotonic() >= end:
                raise ServiceReplyTimeout(f"{self._name}: the service never answered a probe")

    def destroy(self) -> None:
        self._node.destroy_client(self._client)


def _wait(future: Future[Any], end: float) -> bool:
    while not future.done() and time.monotonic() < end:
        time.sleep(0.01)
    return future.done()
