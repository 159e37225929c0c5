"""How `pymeshctl` finds and talks to the control plane.

How this works:

- **Where and who.** Each setting comes from the first of: the command's flag
  (`--control-plane`, `--token`, `--ca-cert`, `--ca-hash`), the environment
  (`PYMESH_CONTROL_PLANE`, `PYMESH_ADMIN_TOKEN`, `PYMESH_CA_CERT`, `PYMESH_CA_HASH`), the config
  file (`$PYMESH_CONFIG`, else `$XDG_CONFIG_HOME/pymesh/config.yaml`, else
  `~/.config/pymesh/config.yaml`), and a default (`https://127.0.0.1:15012`, no token).
  `resolve_target` does this once per command, lazily: commands that never call the control
  plane (offline `analyze`) never read the config file.
- **TLS.** `http://` speaks plain HTTP. `https://` verifies the server with `--ca-cert FILE`
  (the control plane's CA, PEM), or with a pinned CA hash (`--ca-hash`, the SHA-256 of the CA
  root certificate's DER, as join tokens carry): the roots are fetched once from
  `/v1/trust-bundle` without verification, kept only if one of them has the pinned hash, and
  then used to verify the real connection — kubeadm's discovery-token-ca-cert-hash. Without
  either, the system's trust store.
- **Errors.** Everything a user can get wrong (an unreachable address, a refused token, a
  missing resource, a bad config file) becomes a `CliError` with a one-line message;
  `control_plane_command` turns it into `pymeshctl: error: ...` on stderr and a non-zero exit,
  never a traceback. An API error keeps its status, code and JSON body (`ApiError`) so a
  command can render it (a refused apply prints its findings).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
import yaml

__all__ = [
    "DEFAULT_CONTROL_PLANE",
    "ApiError",
    "CliError",
    "ConnectionOptions",
    "ControlPlaneClient",
    "Target",
    "config_path",
    "control_plane_command",
    "fail",
    "resolve_target",
]

DEFAULT_CONTROL_PLANE = "https://127.0.0.1:15012"
ENV_CONTROL_PLANE = "PYMESH_CONTROL_PLANE"
ENV_TOKEN = "PYMESH_ADMIN_TOKEN"
ENV_CA_CERT = "PYMESH_CA_CERT"
ENV_CA_HASH = "PYMESH_CA_HASH"
ENV_CONFIG = "PYMESH_CONFIG"
DEFAULT_TIMEOUT = 10.0
CONFIG_KEYS = ("controlPlane", "token", "tokenFile", "caCert", "caHash", "timeout")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status `exit_code` (1; 2 for usage)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiError(CliError):
    """The control plane answered with an error status; `body` is its JSON error object."""

    def __init__(self, status: int, code: str, message: str, body: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = dict(body)


def fail(message: str, exit_code: int = 1) -> CliError:
    """A CliError to raise (`raise fail("...")`)."""
    return CliError(message, exit_code)


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """The connection flags of one command, as given (None: not given)."""

    control_plane: str | None = None
    token: str | None = None
    ca_cert: Path | None = None
    ca_hash: str | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect and with which credentials, and where each setting came from."""

    urls: tuple[str, ...]
    token: str | None
    ca_cert: Path | None = None
    ca_hash: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    sources: Mapping[str, str] = field(default_factory=dict)

    def token_hint(self) -> str:
        """Where a user sets the admin token (for error messages)."""
        return f"pass --token, set {ENV_TOKEN}, or put `token:` / `tokenFile:` in {config_path()}"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file pymeshctl reads: `$PYMESH_CONFIG`, else the XDG location."""
    env = os.environ if environ is None else environ
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "pymesh" / "config.yaml"


def _read_config(environ: Mapping[str, str]) -> tuple[Path, dict[str, Any]]:
    path = config_path(environ)
    explicit = bool(environ.get(ENV_CONFIG))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise fail(f"config file {path} ({ENV_CONFIG}) does not exist", 2) from None
        return path, {}
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read config file {path}: {exc}", 2) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise fail(f"config file {path}{where} is not valid YAML", 2) from None
    if data is None:
        return path, {}
    if not isinstance(data, dict):
        raise fail(f"config file {path} must hold a mapping (controlPlane: URL, ...)", 2)
    unknown = sorted(str(k) for k in data if k not in CONFIG_KEYS)
    if unknown:
        raise fail(
            f"config file {path}: unknown key {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})", 2
        )
    for key, value in data.items():
        ok = isinstance(value, str) or (
            key == "controlPlane"
            and isinstance(value, list)
            and all(isinstance(v, str) for v in value)
        )
        if key == "timeout":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if not ok:
            raise fail(f"config file {path}: {key} has the wrong type", 2)
    return path, data


def _check_url(url: str, source: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail(
            f"control plane address {url!r} ({source}) must be an http:// or https:// URL", 2
        )
    return url.rstrip("/")


def resolve_target(opts: ConnectionOptions, environ: Mapping[str, str] | None = None) -> Target:
    """Resolve flags, environment and config file into a `Target` (CliError if malformed)."""
    env = os.environ if environ is None else environ
    cfg_path, cfg = _read_config(env)
    cfg_src = f"config file {cfg_path}"
    sources: dict[str, str] = {}

    def pick(flag: Any, flag_name: str, env_name: str, key: str) -> Any:
        if flag is not None:
            sources[key] = flag_name
            return flag
        if env.get(env_name):
            sources[key] = env_name
            return env[env_name]
        if key in cfg:
            sources[key] = cfg_src
            return cfg[key]
        return None

    raw_urls = pick(opts.control_plane, "--control-plane", ENV_CONTROL_PLANE, "controlPlane")
    if raw_urls is None:
        sources["controlPlane"] = "the default"
        raw_urls = DEFAULT_CONTROL_PLANE
    items = raw_urls if isinstance(raw_urls, list) else str(raw_urls).split(",")
    urls = tuple(_check_url(u.strip(), sources["controlPlane"]) for u in items if u.strip())
    if not urls:
        raise fail(f"no control plane address in {sources['controlPlane']}", 2)

    token = pick(opts.token, "--token", ENV_TOKEN, "token")
    if token is None and "tokenFile" in cfg:
        token_file = Path(str(cfg["tokenFile"])).expanduser()
        if not token_file.is_absolute():
            token_file = cfg_path.parent / token_file
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot read the token file {token_file} ({cfg_src}): {exc}", 2) from None
        sources["token"] = f"{cfg_src} (tokenFile)"
    ca_cert = pick(opts.ca_cert, "--ca-cert", ENV_CA_CERT, "caCert")
    if ca_cert is not None:
        ca_cert = Path(str(ca_cert)).expanduser()
        if sources.get("caCert") == cfg_src and not ca_cert.is_absolute():
            ca_cert = cfg_path.parent / ca_cert
    ca_hash = pick(opts.ca_hash, "--ca-hash", ENV_CA_HASH, "caHash")
    if ca_hash is not None:
        ca_hash = _normalize_hash(str(ca_hash), sources["caHash"])
    if ca_cert is not None and ca_hash is not None:
        # one way to verify: the one from the more specific source
        rank = {"--ca-cert": 0, "--ca-hash": 0, ENV_CA_CERT: 1, ENV_CA_HASH: 1}
        r_cert, r_hash = rank.get(sources["caCert"], 2), rank.get(sources["caHash"], 2)
        if r_cert == r_hash == 0:
            raise fail("give --ca-cert or --ca-hash, not both", 2)
        if r_hash < r_cert:
            ca_cert = None
        else:
            ca_hash = None
    timeout = opts.timeout
    if "timeout" in cfg and opts.timeout == DEFAULT_TIMEOUT:
        timeout = float(cfg["timeout"])
    return Target(
        urls=urls,
        token=str(token).strip() if token else None,
        ca_cert=ca_cert,
        ca_hash=ca_hash,
        timeout=timeout,
        sources=sources,
    )


def _normalize_hash(value: str, source: str) -> str:
    h = value.strip().lower().removeprefix("sha256:")
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise fail(f"CA hash from {source} must be sha256:<64 hex digits>", 2)
    return h


def _pinned_context(url: str, pin: str, timeout: float) -> ssl.SSLContext:
    """Fetch the CA roots without verification, keep those with the pinned hash, and return a
    context that verifies the control plane with them."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        resp = httpx.get(f"{url}/v1/trust-bundle", verify=False, timeout=timeout)
        resp.raise_for_status()
        roots_pem = str(resp.json()["roots"])
        roots = x509.load_pem_x509_certificates(roots_pem.encode())
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise fail(
            f"cannot fetch the CA roots from {url} to check the pinned hash: {exc}"
        ) from None
    pinned = [r for r in roots if hashlib.sha256(r.public_bytes(Encoding.DER)).hexdigest() == pin]
    if not pinned:
        raise fail(
            f"the control plane at {url} presents a CA that does not match the pinned hash "
            f"sha256:{pin}: refusing to talk to it"
        )
    return ssl.create_default_context(
        cadata="".join(r.public_bytes(Encoding.PEM).decode() for r in pinned)
    )


class ControlPlaneClient:
    """The control plane's HTTP API, with one-line errors. Connects on first use; with several
    addresses, uses the first that answers."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._client: httpx.Client | None = None
        self.url = target.urls[0]

    def __repr__(self) -> str:
        return f"ControlPlaneClient(url={self.url!r}, connected={self._client is not None})"

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _verify(self, url: str) -> ssl.SSLContext | bool:
        if not url.startswith("https://"):
            return True
        t = self.target
        if t.ca_cert is not None:
            if not t.ca_cert.is_file():
                raise fail(f"CA certificate file {t.ca_cert} does not exist", 2)
            try:
                return ssl.create_default_context(cafile=str(t.ca_cert))
            except (ssl.SSLError, OSError) as exc:
                raise fail(f"cannot load the CA certificate {t.ca_cert}: {exc}", 2) from None
        if t.ca_hash is not None:
            return _pinned_context(url, t.ca_hash, t.timeout)
        return True

    def _make(self, url: str) -> httpx.Client:
        headers = {"User-Agent": "pymeshctl"}
        if self.target.token:
            headers["Authorization"] = f"Bearer {self.target.token}"
        return httpx.Client(
            base_url=url, headers=headers, timeout=self.target.timeout, verify=self._verify(url)
        )

    def _unreachable(self, url: str, exc: Exception) -> CliError:
        src = self.target.sources.get("controlPlane", "")
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in reason:
            return fail(
                f"the TLS certificate of the control plane at {url} could not be verified "
                f"({reason}); give its CA with --ca-cert FILE or pin it with --ca-hash"
            )
        if isinstance(exc, httpx.TimeoutException):
            return fail(
                f"the control plane at {url} did not answer within {self.target.timeout:g}s"
            )
        return fail(f"cannot reach the control plane at {url} (from {src}): {reason}")

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send a request; an error status raises `ApiError`, a transport failure `CliError`."""
        if self._client is not None:
            try:
                resp = self._client.request(method, path, **kw)
            except httpx.HTTPError as exc:
                raise self._unreachable(self.url, exc) from None
        else:
            resp = self._first(method, path, **kw)
        if resp.status_code >= 400:
            raise self._api_error(resp)
        return resp

    def _first(self, method: str, path: str, **kw: Any) -> httpx.Response:
        last: CliError | None = None
        for url in self.target.urls:
            client = self._make(url)
            try:
                resp = client.request(method, path, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                client.close()
                last = self._unreachable(url, exc)
                continue
            except httpx.HTTPError as exc:
                client.close()
                raise self._unreachable(url, exc) from None
            self._client, self.url = client, url
            return resp
        assert last is not None
        raise last

    def get(self, path: str, **kw: Any) -> Any:
        """GET `path` and decode its JSON."""
        return self._json(self.request("GET", path, **kw))

    def post(self, path: str, **kw: Any) -> Any:
        """POST to `path` and decode the JSON answer (None for 204)."""
        return self._json(self.request("POST", path, **kw))

    def delete(self, path: str, **kw: Any) -> Any:
        """DELETE `path` and decode the JSON answer."""
        return self._json(self.request("DELETE", path, **kw))

    def _json(self, resp: httpx.Response) -> Any:
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise fail(
                f"the control plane at {self.url} answered {resp.request.url.path} with "
                "something that is not JSON (is this a pymesh control plane?)"
            ) from None

    def _api_error(self, resp: httpx.Response) -> ApiError:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"error": "http_error", "message": resp.text.strip()[:200]}
        code = str(body.get("error") or "http_error")
        message = str(body.get("message") or resp.reason_phrase)
        status = resp.status_code
        if status == 401:
            if self.target.token:
                src = self.target.sources.get("token", "")
                message = f"the control plane refused the token from {src} (401 unauthorized)"
            else:
                message = f"the control plane wants an admin token: {self.target.token_hint()}"
        elif status == 403:
            message = f"forbidden: {message} (admin operations need the admin token)"
        elif status == 413:
            message = f"too large for the control plane: {message}"
        elif status == 429:
            message = f"rate limited: {message}"
        elif status >= 500:
            message = f"the control plane failed ({status}): {message}"
        return ApiError(status, code, message, body)


# -------------------------------------------------------------------------------- the decorator

ControlPlaneOpt = Annotated[
    str | None,
    typer.Option(
        "--control-plane",
        help=f"Control plane URL (or ${ENV_CONTROL_PLANE}, or controlPlane in the config file).",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", help=f"Admin token (or ${ENV_TOKEN}, or token / tokenFile in the config file)."
    ),
]
CaCertOpt = Annotated[
    Path | None,
    typer.Option("--ca-cert", help="For https://: the control plane's CA certificate (PEM)."),
]
CaHashOpt = Annotated[
    str | None,
    typer.Option(
        "--ca-hash",
        help="For https://: pin the control plane's CA (sha256:<hex>, as join "
        "tokens carry) instead of --ca-cert.",
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each API call.")
]

_CONNECTION_PARAMS = [
    inspect.Parameter("control_plane", inspect.Parameter.KEYWORD_ONLY, annotation=ControlPlaneOpt,
                      default=None),
    inspect.Parameter("token", inspect.Parameter.KEYWORD_ONLY, annotation=TokenOpt, default=None),
    inspect.Parameter("ca_cert", inspect.Parameter.KEYWORD_ONLY, annotation=CaCertOpt,
                      default=None),
    inspect.Parameter("ca_hash", inspect.Parameter.KEYWORD_ONLY, annotation=CaHashOpt,
                      default=None),
    inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY, annotation=TimeoutOpt,
                      default=DEFAULT_TIMEOUT),
]  # fmt: skip


class LazyClient:
    """A `ControlPlaneClient` made on first use (so offline commands never resolve settings)."""

    def __init__(self, opts: ConnectionOptions) -> None:
        self.opts = opts
        self._client: ControlPlaneClient | None = None

    def __repr__(self) -> str:
        return f"LazyClient(opts={self.opts!r}, client={self._client!r})"

    def __call__(self) -> ControlPlaneClient:
        if self._client is None:
            self._client = ControlPlaneClient(resolve_target(self.opts))
        return self._client

    def close(self) -> None:
        """Close the client if one was made."""
        if self._client is not None:
            self._client.close()


def report(exc: CliError) -> None:
    """Print a CliError as pymeshctl does (one line on stderr)."""
    typer.echo(f"pymeshctl: error: {exc}", err=True)


def control_plane_command(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command the connection options (`--control-plane`, `--token`, `--ca-cert`,
    `--ca-hash`, `--timeout`) and turn every `CliError` it raises into one line on stderr and
    its exit status. The command receives `cp`, a `LazyClient` (call it for the client)."""
    sig = inspect.signature(fn, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "cp"]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        opts = ConnectionOptions(
            control_plane=kwargs.pop("control_plane", None),
            token=kwargs.pop("token", None),
            ca_cert=kwargs.pop("ca_cert", None),
            ca_hash=kwargs.pop("ca_hash", None),
            timeout=kwargs.pop("timeout", DEFAULT_TIMEOUT),
        )
        lazy = LazyClient(opts)
        try:
            fn(*args, cp=lazy, **kwargs)
        except CliError as exc:
            report(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        finally:
            lazy.close()

    wrapper.__signature__ = sig.replace(parameters=[*params, *_CONNECTION_PARAMS])  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # typer must read the new signature, not fn's
    wrapper.__annotations__ = {}
    return wrapper


def offline_command(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn every `CliError` of a command that needs no control plane into one line on stderr
    and its exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except CliError as exc:
            report(exc)
            raise typer.Exit(exc.exit_code) from None

    return wrapper
