"""The compressed snapshot line (`encoding=zlib`): the same documents, far fewer bytes, and the
same head (type, revision, digest) so a reader can tell the revision without decoding."""

from __future__ import annotations

import base64
import json
import zlib

from pymesh_controlplane.hub import encode_snapshot
from pymesh_controlplane.views import View


def test_zlib_line_carries_the_same_documents() -> None:
    docs = [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": f"svc-{i}", "namespace": "default"},
            "spec": {"hosts": [f"svc-{i}"], "ports": [{"number": 80, "name": "http"}]},
        }
        for i in range(200)
    ]
    snap = encode_snapshot(View("default"), 42, docs)
    plain = json.loads(snap.message_for(""))
    packed = json.loads(snap.message_for("zlib"))
    assert plain["resources"] == docs
    assert "resources" not in packed and packed["encoding"] == "zlib"
    assert json.loads(zlib.decompress(base64.b64decode(packed["data"]))) == docs
    for key in ("type", "revision", "digest", "view"):
        assert packed[key] == plain[key]
    assert snap.message_for("zlib").startswith(b'{"type":"snapshot","revision":42,')
    assert len(snap.message_for("zlib")) * 5 < len(snap.message_for(""))
