"""Run MONAI Label's blocking endpoints in worker threads, so one infer does not stall the server.

MONAI Label 0.8.5 declares its infer and datastore-upload endpoints ``async`` but does all their work
(reading, segmenting, writing files) synchronously inside them, so the event loop is blocked for the
whole request: while one study is segmented, no other request is even read, not ``GET /info/``, not
a training-status poll, not another annotator's save. This ASGI middleware runs those requests in a
small thread pool, each in an event loop of its own, passing the connection's messages to and from
the server's loop; everything else stays on the server's loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

# (method, path) of the endpoints that block: segmenting, and checking and writing uploaded studies/labels.
BLOCKING = [("POST", re.compile(r"/infer/[^/]+/?")), ("PUT", re.compile(r"/datastore/(image|label)?/?"))]
# Two at a time: on a small CPU server more parallel segmentations only share the same cores, while
# queued ones wait here without holding up the server's own loop.
WORKERS = 2


class OffloadBlockingEndpoints:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app, workers: int = WORKERS):
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blocking-endpoint")

    def _blocking(self, scope) -> bool:
        return scope["type"] == "http" and any(
            scope["method"] == method and pattern.fullmatch(scope["path"]) for method, pattern in BLOCKING
        )

    async def __call__(self, scope, receive, send):
        if not self._blocking(scope):
            return await self.app(scope, receive, send)
        server_loop = asyncio.get_running_loop()

        async def receive_here():
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(receive(), server_loop))

        async def send_here(message):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(send(message), server_loop))

        def run() -> None:
            asyncio.run(self.app(scope, receive_here, send_here))

        await server_loop.run_in_executor(self.pool, run)
