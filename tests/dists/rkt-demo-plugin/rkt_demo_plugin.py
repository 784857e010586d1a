"""A third-party plugin, packaged and installed as any would be.

It serves ``demo:NAME`` image strings by building a tiny ACI named
``demo.example/NAME`` on the fly, through the public hook and fetch contracts only.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

from rkt.api import FetchedImage, FetchSession, ImageRef, hookimpl


class DemoFetcher:
    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        name = (ref.url or "").split(":", 1)[1]
        manifest = {"acKind": "ImageManifest", "acVersion": "0.8.11",
                    "name": f"demo.example/{name}",
                    "labels": [{"name": "version", "value": "0.0.1"}]}
        fd, path = tempfile.mkstemp(prefix="demo-", dir=session.tmp_dir)
        with open(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            data = json.dumps(manifest).encode()
            info = tarfile.TarInfo("manifest")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            rootfs = tarfile.TarInfo("rootfs")
            rootfs.type = tarfile.DIRTYPE
            tar.addfile(rootfs)
        return FetchedImage(path=Path(path), origin=ref.text, temporary=True)


@hookimpl
def rkt_register_fetchers(registry):
    registry.add("demo", DemoFetcher())
