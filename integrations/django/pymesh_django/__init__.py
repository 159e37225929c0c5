"""pymesh-django: mesh a Django project with one setting and one middleware.

    # settings.py
    PYMESH = {
        "service": "reviews",
        "namespace": "default",
        "config": ["mesh/"],          # Istio YAML files or directories
        "ca": "dev-ca",               # static mode: a local dev CA directory
        "xfcc_key_file": "/run/pymesh/xfcc.key",  # behind pymesh-proxy, over TCP
    }
    MIDDLEWARE = ["pymesh_django.MeshMiddleware", ...]  # first

`MeshMiddleware` applies the mesh's PeerAuthentication, header hygiene, path normalization and
AuthorizationPolicy (the same `pymesh.inbound.InboundPolicy` as every other adapter) and sets
`request.mesh_peer` (a `pymesh.identity.SpiffeId`, or None). Under WSGI the caller's identity
comes from the proxy's X-Forwarded-Client-Cert (trusted only with a valid HMAC, or on a Unix
socket with `trust_unix_socket`); under ASGI served by `get_mesh().serve(application)`, from
the mesh's own mTLS. `get_mesh()` is the process's one `pymesh.Mesh`, built lazily from the
settings (also for outbound clients: `get_mesh().http_client()`).
"""

from pymesh_django.middleware import MeshMiddleware
from pymesh_django.runtime import MeshNotReady, close, get_mesh

__all__ = ["MeshMiddleware", "MeshNotReady", "close", "get_mesh"]
