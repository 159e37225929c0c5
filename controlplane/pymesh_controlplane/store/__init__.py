"""The control plane's store: etcd's model (revisions, prefix ranges, compare-and-swap
transactions, watches from a revision, leases) as the `Store` protocol, implemented on SQLite by
`SqliteStore`. See `pymesh_controlplane.store.base` for the model."""

from __future__ import annotations

from pymesh_controlplane.store.base import (
    CompactedError,
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventType,
    FutureRevisionError,
    Get,
    GetResult,
    KeyValue,
    LeaseGrant,
    LeaseInfo,
    LeaseNotFoundError,
    Op,
    OpResult,
    Put,
    PutResult,
    RangeResult,
    Store,
    StoreClosedError,
    StoreError,
    TxnResult,
    Watch,
    WatchResponse,
    prefix_end,
)
from pymesh_controlplane.store.sqlite import SqliteStore, StoreLockedError

__all__ = [
    "CompactedError",
    "Compare",
    "Delete",
    "DeleteResult",
    "Event",
    "EventType",
    "FutureRevisionError",
    "Get",
    "GetResult",
    "KeyValue",
    "LeaseGrant",
    "LeaseInfo",
    "LeaseNotFoundError",
    "Op",
    "OpResult",
    "Put",
    "PutResult",
    "RangeResult",
    "SqliteStore",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "TxnResult",
    "Watch",
    "WatchResponse",
    "prefix_end",
]
