"""One view that says what the app saw: the caller's identity, the path, stray headers."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path

import pymesh_django


def whoami(request: HttpRequest, **kwargs: str) -> JsonResponse:
    peer = request.mesh_peer  # type: ignore[attr-defined]
    return JsonResponse(
        {
            "peer": str(peer) if peer else None,
            "sa": peer.service_account if peer else None,
            "path": request.path,
            "path_info": request.path_info,
            "xfcc": request.headers.get("x-forwarded-client-cert"),
            "pid": os.getpid(),
            "renewing": "running" in repr(pymesh_django.get_mesh().identity),
        }
    )


urlpatterns = [
    path("whoami", whoami),
    path("health", whoami),
    re_path(r"^private/", whoami),
    path("api/<path:rest>", whoami),
]
