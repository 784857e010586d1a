"""stage0's side of the metadata service with a real prepared pod (no-op stage1):
what it registers, the ``AC_METADATA_URL`` it gives the apps, and unregistering
when the pod is removed.

The pod's address is given as 127.0.0.1 here, where the test process stands in
for the pod's apps; with a private network it is the pod's CNI address
(tests/pods/test_run.py runs a real pod against a real service).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_lifecycle_noop import noop_plugins, rkt  # noqa: F401  (a fixture, and its runner)

from rkt.facade import Plugins
from rkt.metadata import POD_REGISTRATION_FILE
from rkt.metadata.client import register_pod, with_metadata_url
from rkt.pod.dirs import PodStore
from rkt.pod.prepare import load_resolved_pod
from rkt_testing import AciBuilder, RktEnv
from rkt_testing.aci import image_manifest
from rkt_testing.metadata import InProcessMetadataService


@pytest.fixture
def mds(tmp_path: Path) -> Iterator[InProcessMetadataService]:
    service = InProcessMetadataService(tmp_path / "mds")
    yield service
    service.close()


def test_a_prepared_pod_registers_and_is_unregistered_by_gc(
    noop_plugins: Plugins, rkt_env: RktEnv, aci_builder: AciBuilder,  # noqa: F811
    mds: InProcessMetadataService, capsys: pytest.CaptureFixture[str],
) -> None:
    image = aci_builder.build(busybox=True, manifest=image_manifest(
        "example.com/hello", exec_=["/bin/true"],
        extra={"annotations": [{"name": "from", "value": "image"}]}))
    code, out, err = rkt(rkt_env, "--insecure-options=image", "prepare", "--quiet",
                         "--stage1-name=coreos.com/rkt/stage1-noop", str(image),
                         "--annotation=from=pod", capsys=capsys)
    assert code == 0, err
    pod = PodStore(rkt_env.data_dir).find(out.strip())
    resolved = load_resolved_pod(pod)

    registration = register_pod(mds.socket_path, pod, resolved, "127.0.0.1")
    url = registration.url("172.16.28.1")
    assert url == f"http://172.16.28.1:{mds.port}/{registration.token}"  # no trailing slash
    assert (pod.path / POD_REGISTRATION_FILE).read_text() == str(mds.socket_path)

    token = registration.token
    assert mds.get(token, "pod/uuid").body == pod.uuid.encode()
    assert mds.get(token, "pod/manifest").json() == json.loads((pod.path / "pod").read_bytes())
    app = resolved.apps[0].name
    stored_image = json.loads((pod.path / "appsinfo" / app / "manifest").read_bytes())
    assert mds.get(token, f"apps/{app}/image/manifest").json() == stored_image
    assert mds.get(token, f"apps/{app}/image/id").text == resolved.apps[0].image_id
    assert mds.get(token, f"apps/{app}/annotations/from").text == "pod"

    env = with_metadata_url(resolved, url).apps[0].environment()
    assert env["AC_METADATA_URL"] == url
    assert list(dict(resolved.apps[0].env)) == list(env)  # the variable keeps its place

    code, _, err = rkt(rkt_env, "gc", "--expire-prepared=0s", "--grace-period=0s",
                       capsys=capsys)
    assert code == 0, err
    assert mds.get(token, "pod/uuid").status == 403
    assert len(mds.store) == 0
