"""Host names as Kubernetes DNS resolves them, seen from a namespace.

`reviews`, `reviews.default` and `reviews.default.svc.cluster.local` are one service seen from
namespace `default`. Pure functions: the loader, `analyze` and the runtime share them.
"""

from __future__ import annotations

import ipaddress


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def canonical_host(name: str, namespace: str, domain: str = "cluster.local") -> str:
    """The fully qualified form of host `name` as written in a resource of `namespace`.

    - `reviews` → `reviews.<namespace>.svc.<domain>`;
    - `reviews.prod` → `reviews.prod.svc.<domain>`;
    - `reviews.prod.svc` → `reviews.prod.svc.<domain>`;
    - anything with more dots (`api.example.com`, `reviews.prod.svc.cluster.local`), an IP
      address, and `*` are left as they are.

    Names are lower-cased and a trailing dot is dropped; wildcards (`*.example.com`) are kept.
    """
    host = name.strip().lower().rstrip(".")
    if not host or host == "*" or _is_ip(host):
        return host
    suffix = f".svc.{domain}"
    if host.endswith(suffix):
        return host
    if host.endswith(".svc") and host.count(".") == 2:
        return f"{host}.{domain}"
    dots = host.count(".")
    if dots == 0:
        return f"{host}.{namespace}{suffix}"
    if dots == 1:
        return f"{host}{suffix}"
    return host


def host_matches(pattern: str, host: str) -> bool:
    """Whether canonical `host` is covered by canonical `pattern` (`*`, `*.example.com`, exact)."""
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return False
