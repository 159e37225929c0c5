"""`PYMESH["mesh"]` for the readiness test: a mesh that takes PYMESH_TEST_SLOW_START seconds."""

from __future__ import annotations

import os
import time

import pymesh


def build() -> pymesh.Mesh:
    time.sleep(float(os.environ["PYMESH_TEST_SLOW_START"]))
    return pymesh.Mesh.from_files(
        os.environ["PYMESH_TEST_CONFIG"], service="reviews", ca=os.environ["PYMESH_TEST_CA"]
    )
