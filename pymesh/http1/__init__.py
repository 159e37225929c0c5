"""A lean HTTP/1.1 keep-alive client pool on asyncio Protocols and httptools: the endpoint
tier's connection pool for the async meshed client (`Http1Pool`). Async only; the sync client
keeps httpcore."""

from pymesh.http1.pool import EndpointPool, Http1Pool, PoolLimits
from pymesh.http1.protocol import Http1Connection, Http1Response, ReusedConnectionClosed

__all__ = [
    "EndpointPool",
    "Http1Connection",
    "Http1Pool",
    "Http1Response",
    "PoolLimits",
    "ReusedConnectionClosed",
]
