"""Serve the project's ASGI application twice: on `Mesh.server` (mesh mTLS; the policy runs in
pymesh.asgi.MeshMiddleware and the Django middleware only reads the peer) and on plain uvicorn
(the Django middleware decides itself, XFCC with HMAC). Prints the two ports as JSON, serves
until stdin closes."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.djangoproject.settings")

from django.core.asgi import get_asgi_application

import pymesh_django
from pymesh.server.runner import MeshServer


def main() -> None:
    application = get_asgi_application()
    mesh = pymesh_django.get_mesh()
    with mesh.server(application) as meshed, MeshServer(application) as plain:
        print(json.dumps({"mtls": meshed.port, "plain": plain.port}), flush=True)
        sys.stdin.read()
    pymesh_django.close()


if __name__ == "__main__":
    main()
