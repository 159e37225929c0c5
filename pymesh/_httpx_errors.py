"""The one place that maps pymesh errors and httpcore errors to httpx's exception types.

A meshed httpx client raises classes that are both the pymesh error (`pymesh.NoRouteError`, ...)
and an `httpx.TransportError`, so code written for httpx keeps working and code that wants the
mesh's reason can catch the precise class.
"""

from __future__ import annotations

import httpcore
import httpx

from pymesh import errors


class HttpxNoRouteError(errors.NoRouteError, httpx.TransportError):
    """`pymesh.NoRouteError` as an `httpx.TransportError`."""


class HttpxEgressDeniedError(errors.EgressDeniedError, httpx.TransportError):
    """`pymesh.EgressDeniedError` as an `httpx.TransportError`."""


class HttpxNoHealthyEndpointError(errors.NoHealthyEndpointError, httpx.TransportError):
    """`pymesh.NoHealthyEndpointError` as an `httpx.TransportError`."""


class HttpxMeshTimeoutError(errors.MeshTimeoutError, httpx.TimeoutException):
    """`pymesh.MeshTimeoutError` as an `httpx.TimeoutException`."""


class HttpxRetriesExhaustedError(errors.RetriesExhaustedError, httpx.TransportError):
    """`pymesh.RetriesExhaustedError` as an `httpx.TransportError`."""


class HttpxCircuitOpenError(errors.CircuitOpenError, httpx.TransportError):
    """`pymesh.CircuitOpenError` as an `httpx.TransportError`."""


class HttpxUpstreamConnectError(errors.UpstreamConnectError, httpx.ConnectError):
    """`pymesh.UpstreamConnectError` as an `httpx.ConnectError`."""


_FOR: dict[type[errors.CallError], type[errors.CallError]] = {
    errors.NoRouteError: HttpxNoRouteError,
    errors.EgressDeniedError: HttpxEgressDeniedError,
    errors.NoHealthyEndpointError: HttpxNoHealthyEndpointError,
    errors.MeshTimeoutError: HttpxMeshTimeoutError,
    errors.RetriesExhaustedError: HttpxRetriesExhaustedError,
    errors.UpstreamConnectError: HttpxUpstreamConnectError,
    errors.CircuitOpenError: HttpxCircuitOpenError,
}
# Users see the pymesh name (`RetriesExhaustedError: ...`), which is also the class they catch;
# the httpx twin is an implementation detail of this module.
for _core, _twin in _FOR.items():
    _twin.__name__ = _twin.__qualname__ = _core.__name__


def to_httpx(exc: errors.CallError, request: httpx.Request) -> Exception:
    """The httpx-flavoured twin of a pymesh call error, bound to `request`."""
    if isinstance(exc, httpx.HTTPError):
        return exc
    cls = _FOR.get(type(exc), HttpxUpstreamConnectError)
    out = cls(str(exc), decision=exc.decision)
    out.__cause__ = exc.__cause__
    out._request = request  # type: ignore[attr-defined]
    return out


_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def map_httpcore(exc: Exception, request: httpx.Request | None) -> Exception:
    """The httpx exception httpx itself would raise for an httpcore exception."""
    for core, mapped in _HTTPCORE_TO_HTTPX:
        if isinstance(exc, core):
            out = mapped(str(exc))
            out._request = request
            out.__cause__ = exc
            return out
    return exc
