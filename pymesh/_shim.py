"""The few primitives that differ between the async stack and its generated sync twin.

`scripts/unasync.py` rewrites `async_sleep` to `sync_sleep` (and `AnyIOBackend` to
`SyncBackend`) when it generates `pymesh/_sync` from `pymesh/_async`.
"""

from __future__ import annotations

import asyncio
import contextvars
import time

async_sleep = asyncio.sleep
sync_sleep = time.sleep

# The absolute (monotonic) deadline of the attempt in progress in this context. The network
# backend wrappers clamp every connect/read/write timeout to it, so one mechanism enforces the
# route timeout and perTryTimeout for sync and async alike, while the body is still streaming.
DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar(
    "pymesh_deadline", default=float("inf")
)
