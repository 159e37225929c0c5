"""`pymesh-controlplane`: the command line of the control plane."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Annotated

import typer

from pymesh_controlplane import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="pymesh-controlplane",
    help="The pymesh control plane: Istio resources, workload registry and config watch.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """The pymesh control plane."""


@app.command("serve")
def serve_command(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the store and the admin token live.")
    ] = Path(".pymesh"),
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT (port 0 picks one).")
    ] = "127.0.0.1:15012",
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Serve plain HTTP instead of HTTPS (loopback addresses only; for tests).",
        ),
    ] = False,
    tls_san: Annotated[
        list[str] | None,
        typer.Option(
            "--tls-san",
            help="Another DNS name or IP for the server certificate (repeatable).",
        ),
    ] = None,
    trust_domain: Annotated[
        str, typer.Option("--trust-domain", help="SPIFFE trust domain.")
    ] = "cluster.local",
    cacerts: Annotated[
        Path | None,
        typer.Option(
            "--cacerts",
            help="Istio plug-in CA files (ca-cert.pem, ca-key.pem, root-cert.pem); "
            "default: a CA generated in <data-dir>/ca.",
        ),
    ] = None,
    port_file: Annotated[
        Path | None,
        typer.Option("--port-file", help="Write the bound port here once listening."),
    ] = None,
    lease_ttl: Annotated[
        float, typer.Option("--lease-ttl", min=0.1, help="Registration lease TTL, seconds.")
    ] = 15.0,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", min=0.03, help="Heartbeat interval told to agents.")
    ] = 5.0,
    debounce: Annotated[
        float, typer.Option("--debounce", min=0.0, help="Push debounce window, seconds.")
    ] = 0.05,
    ping_interval: Annotated[
        float, typer.Option("--ping-interval", min=0.05, help="Idle keep-alive on watch streams.")
    ] = 15.0,
    max_body: Annotated[
        int, typer.Option("--max-body", min=1024, help="Largest request body, bytes.")
    ] = 1 << 20,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Run the control plane until SIGTERM or Ctrl-C."""
    # imported here so `--help` does not load the web stack
    from pymesh_controlplane.server import ListenError, Settings, parse_listen, serve

    try:
        host, port = parse_listen(listen, tls=not insecure_http)
    except ListenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = Settings(
        data_dir=data_dir,
        host=host,
        port=port,
        trust_domain=trust_domain,
        cacerts=cacerts,
        lease_ttl=lease_ttl,
        heartbeat=min(heartbeat, lease_ttl / 3),
        debounce=debounce,
        ping_interval=ping_interval,
        max_body=max_body,
        tls=not insecure_http,
        tls_names=tuple(tls_san or ()),
    )
    # Measured (bench/cp_propagation.py): the default collector's full passes over the
    # control plane's many long-lived objects stalled the event loop 70–100 ms, once in ten
    # applies — the whole p99 of propagation. Freeze what exists at start and collect the
    # young generation less often; cycles are still collected.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 1000)
    asyncio.run(serve(settings, port_file=port_file, log_level=log_level))


@app.command("version")
def version_command() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console script entry point."""
    app()
