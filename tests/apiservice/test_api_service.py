"""``rkt api-service``: rkt's read-only gRPC API, driven by a client of its own.

The client is generated at test time by grpcio-tools from the service's
``api.proto`` copied under another module name, so it shares no Python code
with the server: only the wire contract (package ``v1alpha``, the messages and
their field numbers), as a client generated from rkt's own proto file would.
"""

from __future__ import annotations

import importlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error, wait_for_file
from rkt_testing.aci import image_manifest
from rkt_testing.plugin import needs_root

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

PROTO = Path(__file__).parents[2] / "core" / "rkt" / "apiservice" / "v1alpha" / "api.proto"
GENERATED = PROTO.parent


@pytest.fixture(scope="module")
def client_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """``(messages, stubs)`` generated from the proto as an outside client would."""
    root = tmp_path_factory.mktemp("client")
    (root / "rktclient").mkdir()
    shutil.copy(PROTO, root / "rktclient" / "api.proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{root}",
                    f"--python_out={root}", f"--grpc_python_out={root}",
                    str(root / "rktclient" / "api.proto")], check=True)
    # The server's own modules may be imported in this process too (other tests):
    # give the client a descriptor pool of its own, as a separate program has.
    generated = root / "rktclient" / "api_pb2.py"
    code = generated.read_text()
    assert "_descriptor_pool.Default().AddSerializedFile(" in code
    generated.write_text(code.replace("_descriptor_pool.Default().AddSerializedFile(",
                                      "_descriptor_pool.DescriptorPool().AddSerializedFile("))
    sys.path.insert(0, str(root))
    try:
        yield (importlib.import_module("rktclient.api_pb2"),
               importlib.import_module("rktclient.api_pb2_grpc"))
    finally:
        sys.path.remove(str(root))


class Service:
    def __init__(self, env: RktEnv, client_modules: tuple[Any, Any]) -> None:
        self.api, stubs = client_modules
        self.process = subprocess.Popen(
            [env.rkt_binary(), *env.global_flags(), "api-service", "--listen=127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.process.stderr is not None
        lines = []
        for line in self.process.stderr:
            lines.append(line)
            if line.startswith("API service running"):
                break
        found = re.search(r"Listening on 127\.0\.0\.1:(\d+)", "".join(lines))
        assert found, "".join(lines)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{found.group(1)}")
        self.stub = stubs.PublicAPIStub(self.channel)

    def close(self) -> str:
        self.channel.close()
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, err
        return err


@pytest.fixture
def service(rkt_env: RktEnv, client_modules: tuple[Any, Any]) -> Iterator[Service]:
    running = Service(rkt_env, client_modules)
    yield running
    running.close()


# -- without pods ----------------------------------------------------------------------
def test_checked_in_stubs_match_the_proto(tmp_path: Path) -> None:
    """core/rkt/apiservice/v1alpha/*_pb2*.py are what scripts/gen-apiservice makes."""
    (tmp_path / "rkt" / "apiservice" / "v1alpha").mkdir(parents=True)
    shutil.copy(PROTO, tmp_path / "rkt" / "apiservice" / "v1alpha" / "api.proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}",
                    f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", "rkt/apiservice/v1alpha/api.proto"],
                   check=True, cwd=tmp_path)
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        fresh = (tmp_path / "rkt" / "apiservice" / "v1alpha" / name).read_text()
        assert fresh == (GENERATED / name).read_text(), f"{name}: run scripts/gen-apiservice"


def test_get_info_and_images(service: Service, rkt_env: RktEnv,
                             aci_builder: AciBuilder) -> None:
    api = service.api
    info = service.stub.GetInfo(api.GetInfoRequest()).info
    assert info.rkt_version == "1.30.0" and info.appc_version == "0.8.11"
    assert info.global_flags.dir == str(rkt_env.data_dir)
    manifest = image_manifest("example.com/api/web", version="2.1",
                              extra={"annotations": [{"name": "team", "value": "web"}]})
    image = aci_builder.build("img.aci", manifest=manifest)
    rkt_env.run("--insecure-options=image", "fetch", image, check=True)
    images = service.stub.ListImages(api.ListImagesRequest()).images
    assert [(i.name, i.version) for i in images] == [("example.com/api/web", "2.1")]
    assert images[0].manifest == b""  # without detail
    assert images[0].base_format.type == api.IMAGE_TYPE_APPC
    by = service.stub.ListImages
    assert len(by(api.ListImagesRequest(filters=[api.ImageFilter(
        base_names=["web"], labels=[api.KeyValue(Key="version", value="2.1")])])).images) == 1
    assert len(by(api.ListImagesRequest(filters=[api.ImageFilter(prefixes=["other/"])]))
               .images) == 0
    assert len(by(api.ListImagesRequest(filters=[api.ImageFilter(prefixes=["other/"]),
                                                 api.ImageFilter(keywords=["api"])]))
               .images) == 1  # filters are alternatives
    inspected = service.stub.InspectImage(api.InspectImageRequest(id=images[0].id[:20])).image
    assert b'"example.com/api/web"' in inspected.manifest
    assert {(kv.Key, kv.value) for kv in inspected.annotations} == {("team", "web")}
    with pytest.raises(grpc.RpcError) as caught:
        service.stub.InspectImage(api.InspectImageRequest(id="sha512-0000"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_pod_and_logs(service: Service) -> None:
    api = service.api
    with pytest.raises(grpc.RpcError) as caught:
        service.stub.InspectPod(api.InspectPodRequest(id="0123abcd"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "0123abcd" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        list(service.stub.GetLogs(api.GetLogsRequest(pod_id="0123abcd")))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        list(service.stub.ListenEvents(api.ListenEventsRequest(
            filter=api.EventFilter(since_time=int(time.time()) - 3600))))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_client_leaving_mid_stream_leaves_the_service_answering(service: Service) -> None:
    api = service.api
    streams = [service.stub.ListenEvents(api.ListenEventsRequest()) for _ in range(20)]
    time.sleep(0.5)
    for stream in streams:
        stream.cancel()
    # more streams were opened than the server has workers: they must all be free again
    time.sleep(1.0)
    assert service.stub.GetInfo(api.GetInfoRequest(), timeout=10).info.rkt_version


def test_bad_listen_addresses(rkt_env: RktEnv) -> None:
    assert_one_line_error(rkt_env.run("api-service", "--listen=nonsense"), "--listen")
    taken = subprocess.Popen([rkt_env.rkt_binary(), *rkt_env.global_flags(), "api-service",
                              "--listen=127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    try:
        assert taken.stderr is not None
        port = ""
        for line in taken.stderr:
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            if found:
                port = found.group(1)
                break
        result = rkt_env.run("api-service", f"--listen=127.0.0.1:{port}", timeout=30)
        assert result.returncode == 254
        assert "cannot listen" in result.stderr and "Traceback" not in result.stderr
    finally:
        taken.terminate()
        taken.wait(timeout=30)


# -- with pods (root: real stage1s) -----------------------------------------------------
@pytest.fixture
def sleeper(aci_builder: AciBuilder) -> Path:
    return aci_builder.build("sleeper.aci", name="example.com/sleeper", busybox=True,
                             exec_=["/bin/sleep", "1000"])


@needs_root
@pytest.mark.root
@pytest.mark.slow
def test_pods_running_and_exited_and_a_start_event(service: Service, rkt_env: RktEnv,
                                                    sleeper: Path, tmp_path: Path) -> None:
    api = service.api
    exited = rkt_env.run("--insecure-options=image", "run", sleeper, "--exec=/bin/sh", "--",
                         "-c", "exit 3")
    assert exited.returncode == 3, exited.stderr
    exited_uuid = rkt_env.run("list", "--no-legend", "--full").stdout.split()[0]

    events: list[Any] = []
    stream = service.stub.ListenEvents(api.ListenEventsRequest(filter=api.EventFilter(
        types=[api.EVENT_TYPE_POD_STARTED, api.EVENT_TYPE_APP_STARTED])))

    def listen() -> None:
        try:
            for batch in stream:
                events.extend(batch.events)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(0.6)  # the stream has taken its first look
    uuid_file = tmp_path / "uuid"
    pod = subprocess.Popen(
        [rkt_env.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "run",
         f"--uuid-file-save={uuid_file}", str(sleeper)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_file(uuid_file, process=pod)
        rkt_env.run("status", "--wait-ready=30s", "--uuid-file", uuid_file, check=True)
        running_uuid = uuid_file.read_text()
        deadline = time.monotonic() + 15
        while not any(e.type == api.EVENT_TYPE_POD_STARTED for e in events):
            assert time.monotonic() < deadline, events
            time.sleep(0.1)
        started = [e for e in events if e.type == api.EVENT_TYPE_POD_STARTED]
        assert [e.id for e in started] == [running_uuid]

        pods = {p.id: p for p in service.stub.ListPods(api.ListPodsRequest()).pods}
        assert set(pods) == {exited_uuid, running_uuid}
        running, done = pods[running_uuid], pods[exited_uuid]
        assert running.state == api.POD_STATE_RUNNING and running.pid > 0
        assert [n.name for n in running.networks] == ["default"]  # nspawn's default
        assert running.networks[0].ipv4.startswith("172.16.28.")
        on_default = service.stub.ListPods(api.ListPodsRequest(filters=[
            api.PodFilter(network_names=["default"])])).pods
        # an exited pod keeps its attachment until gc, and rkt listed it too
        assert {p.id for p in on_default} == {running_uuid, exited_uuid}
        assert service.stub.ListPods(api.ListPodsRequest(filters=[
            api.PodFilter(network_names=["other"])])).pods == []
        assert running.apps[0].state == api.APP_STATE_RUNNING
        assert running.apps[0].exit_code == -1
        assert running.apps[0].image.name == "example.com/sleeper"
        assert running.manifest == b""  # without detail
        assert running.created_at > 10**18 and running.started_at >= running.created_at
        assert done.state == api.POD_STATE_EXITED and done.pid == -1
        assert done.apps[0].state == api.APP_STATE_EXITED and done.apps[0].exit_code == 3

        listed = service.stub.ListPods(api.ListPodsRequest(detail=True, filters=[
            api.PodFilter(states=[api.POD_STATE_RUNNING], app_names=["sleeper"])])).pods
        assert [p.id for p in listed] == [running_uuid] and b'"acKind"' in listed[0].manifest
        none = service.stub.ListPods(api.ListPodsRequest(filters=[
            api.PodFilter(app_names=["sleeper", "other"])])).pods
        assert none == []  # every app named must be there

        inspected = service.stub.InspectPod(api.InspectPodRequest(id=running_uuid[:8])).pod
        assert inspected.id == running_uuid and b"sleeper" in inspected.manifest
        exited_pod = service.stub.InspectPod(api.InspectPodRequest(id=exited_uuid)).pod
        assert exited_pod.apps[0].exit_code == 3

        with pytest.raises(grpc.RpcError) as caught:
            list(service.stub.GetLogs(api.GetLogsRequest(pod_id=running_uuid)))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        pod.send_signal(signal.SIGTERM)
        pod.wait(timeout=30)
        stream.cancel()
        listener.join(timeout=10)
    # the service changed nothing: gc still sees both pods as its own to collect
    rkt_env.run("gc", "--grace-period=0s", check=True)
    assert service.stub.ListPods(api.ListPodsRequest()).pods == []
