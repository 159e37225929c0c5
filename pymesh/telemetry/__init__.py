"""Telemetry for every meshed surface: Istio's metrics, access logs that say why a call failed,
traces that need no app code.

    import pymesh.telemetry
    pymesh.telemetry.configure(exporter="console", sampling=0.01, access_log=True)
    mesh = pymesh.Mesh.from_files("mesh.yaml", service="frontend")   # picks the configuration up

or per mesh: `Mesh(..., telemetry=TelemetryConfig(...))` (`True`: the defaults; `False`: off).
Without either, telemetry is off and the request path does no telemetry work at all.

The pieces: `pymesh.telemetry.hub` (the per-mesh hook every edge reports to),
`pymesh.telemetry.metrics` (Istio's metrics, mesh health), `pymesh.telemetry.context` (trace
context, W3C / B3 headers, the context variable that carries an inbound request's context and
deadline to the outbound calls made while serving it), `pymesh.telemetry.exposition` (the
`/stats/prometheus` app and listener), `pymesh.telemetry.multiprocess` (pre-fork servers: the
workers' counts shared through `PYMESH_METRICS_DIR` and served summed).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from pymesh.telemetry.context import CURRENT, TraceContext
from pymesh.telemetry.hub import CallRecord, MeshTelemetry

if TYPE_CHECKING:
    from pymesh.mesh import Mesh

__all__ = [
    "CURRENT",
    "CallRecord",
    "ContextThreadPoolExecutor",
    "MeshTelemetry",
    "TelemetryConfig",
    "TraceContext",
    "configure",
    "current_trace",
    "propagating",
    "wrap_executor",
]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TelemetryConfig:
    """What a mesh's telemetry does.

    - `metrics`: Istio's metrics and the mesh-health metrics (per-mesh registry);
    - `access_log`: False (off), True (JSON lines to the `pymesh.access` logger), a `Logger`, a
      file-like object, or a callable taking one line; `access_log_sampling`: the share of calls
      logged (0..1);
    - `sampling`: the share (0..1) of root traces sampled (parent-based: a caller's decision
      is followed); `propagation`: header formats ("tracecontext", "baggage", "b3",
      "b3multi"); `tracer_provider`: the OTel provider spans go to (None: the global one);
    - `explain_size`: how many recent calls `Mesh.explain` keeps; `max_series`: the label
      tuples per metric before labels are coarsened.
    """

    metrics: bool = True
    access_log: Any = False
    access_log_sampling: float = 1.0
    sampling: float = 0.01
    propagation: tuple[str, ...] = ("tracecontext", "baggage")
    tracer_provider: Any = None
    explain_size: int = 100
    max_series: int = 2000


_DEFAULT: TelemetryConfig | None = None


def configure(
    *,
    exporter: Any = None,
    sampling: float = 0.01,
    propagation: Iterable[str] = ("tracecontext", "baggage"),
    metrics: bool = True,
    access_log: Any = False,
    access_log_sampling: float = 1.0,
    explain_size: int = 100,
    batch: bool = True,
    set_global: bool = True,
) -> TelemetryConfig:
    """Turn telemetry on for the meshes made from now on (those given no `telemetry=`), and
    set up the OpenTelemetry SDK in one call when `exporter` is given: "console", "otlp"
    (needs `opentelemetry-exporter-otlp`), or a `SpanExporter` instance (spans go through a
    batch processor, or a simple one with `batch=False`). The SDK's sampler is parent-based
    "always on": pymesh makes the sampling decision (`sampling`) and hands the SDK only
    sampled spans. `set_global` also installs the provider as OTel's global one (once per
    process, as OTel allows). Returns the configuration (usable as `Mesh(telemetry=...)`)."""
    global _DEFAULT
    provider = None
    if exporter is not None:
        provider = _sdk_provider(exporter, batch)
        if set_global:
            from opentelemetry import trace

            if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":
                trace.set_tracer_provider(provider)
    _DEFAULT = TelemetryConfig(
        metrics=metrics,
        access_log=access_log,
        access_log_sampling=access_log_sampling,
        sampling=sampling,
        propagation=tuple(propagation),
        tracer_provider=provider,
        explain_size=explain_size,
    )
    return _DEFAULT


def reset() -> None:
    """Forget `configure`'s settings (meshes made afterwards have telemetry off)."""
    global _DEFAULT
    _DEFAULT = None


def _sdk_provider(exporter: Any, batch: bool) -> Any:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("exporter= needs the OpenTelemetry SDK (opentelemetry-sdk)") from exc
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                'exporter="otlp" needs pip install opentelemetry-exporter-otlp-proto-http'
            ) from exc
        exporter = OTLPSpanExporter()
    provider = TracerProvider(
        sampler=ParentBased(ALWAYS_ON), resource=Resource.create({"telemetry.sdk.name": "pymesh"})
    )
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return provider


def telemetry_for(mesh: Mesh, telemetry: Any) -> MeshTelemetry | None:
    """The `MeshTelemetry` a mesh gets for its `telemetry=` argument (None: off)."""
    if telemetry is None:
        telemetry = _DEFAULT
    if telemetry is None or telemetry is False:
        return None
    if telemetry is True:
        telemetry = TelemetryConfig()
    if not isinstance(telemetry, TelemetryConfig):
        raise TypeError(f"telemetry: a TelemetryConfig, True or False, not {telemetry!r}")
    return MeshTelemetry(mesh, telemetry)


def current_trace() -> TraceContext | None:
    """The trace context of the request being served (None outside a meshed request)."""
    return CURRENT.get()


def propagating(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` bound to the caller's context variables (trace context and deadline), for code
    that hands work to a thread by itself (`threading.Thread(target=propagating(fn))`)."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.run(fn, *args, **kwargs)

    return run


class _ContextExecutor(Executor):
    """An executor whose `submit` runs the function in the submitter's context (as
    `asyncio.to_thread` does), so meshed calls in the worker continue the caller's trace."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        """Submit `fn` to run in a copy of the caller's context."""
        ctx = contextvars.copy_context()
        return self._inner.submit(ctx.run, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the wrapped executor down."""
        self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"wrap_executor({self._inner!r})"


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A `ThreadPoolExecutor` whose `submit` runs the function in the submitter's context, so
    it can be an event loop's default executor (`loop.set_default_executor` wants a
    `ThreadPoolExecutor`): `Mesh.server` installs one, so `run_in_executor(None, fn)` continues
    the request's trace."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        """Submit `fn` to run in a copy of the caller's context."""
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)


def wrap_executor(executor: Executor) -> Executor:
    """`executor` with context propagation: work submitted to it (also through
    `loop.run_in_executor(wrapped, ...)`) sees the submitter's trace context and deadline.
    Thread pools do not copy context variables by themselves; `asyncio.to_thread` does."""
    return _ContextExecutor(executor)
