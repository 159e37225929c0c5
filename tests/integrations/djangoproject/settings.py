"""Settings of the test project: `PYMESH` comes from `PYMESH_TEST_*` environment variables."""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "pymesh-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.integrations.djangoproject.urls"
MIDDLEWARE = ["pymesh_django.MeshMiddleware"]
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, Any] = {}
USE_TZ = True

PYMESH: dict[str, Any] = {
    "ready_timeout": float(os.environ.get("PYMESH_TEST_READY_TIMEOUT", "10")),
    "trust_unix_socket": os.environ.get("PYMESH_TEST_UNIX_SOCKET") == "1",
}
if os.environ.get("PYMESH_TEST_XFCC_KEY"):
    PYMESH["xfcc_key_file"] = os.environ["PYMESH_TEST_XFCC_KEY"]
if os.environ.get("PYMESH_TEST_SLOW_START"):
    PYMESH["mesh"] = "tests.integrations.djangoproject.slow.build"
else:
    PYMESH.update(
        service="reviews",
        namespace="default",
        config=[os.environ["PYMESH_TEST_CONFIG"]],
        ca=os.environ["PYMESH_TEST_CA"],
    )
