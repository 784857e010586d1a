"""Nomad's rkt task driver, replayed: its exact command lines, its decoding of our output.

Read from hashicorp/nomad-driver-rkt, ``rkt/driver.go`` and ``rkt/api.go`` at
commit bcdecbf76551d76baf6d6c45db7cd7f8d5a6170a (the driver's last; Nomad's own
``drivers/rkt/driver.go`` before 0.10 is the same code): ``Fingerprint`` runs
``rkt version``; ``StartTask`` runs ``prepare`` with global flags, volumes,
mounts, env, the image and its per-app flags, then starts ``run-prepared`` in
the foreground under its executor and polls ``status --format=json``
(decoded into its ``Pod`` struct) and ``cat-manifest`` (an appc
``PodManifest``); ``ExecTask`` is ``rkt enter UUID CMD...``; ``StopTask`` is
the executor's shutdown: SIGINT to the ``run-prepared`` process, SIGKILL after
the kill timeout.

Go is not installed here, so Go's ``encoding/json`` is stood in for by
:func:`go_decode`, which is as strict as it is about the types of the fields a
struct declares (a string where a number is declared fails, unknown keys are
ignored, ``null`` leaves the zero value).

Two replays: a task with the driver's ``net = ["host"]`` option (no network
flags at all), and a task on rkt's default network with a ``port_map``,
``dns_servers`` and ``dns_search_domains``, whose address the driver reads
from ``status`` and whose port answers on the host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error
from rkt_testing.aci import image_manifest
from rkt_testing.plugin import needs_root
from rkt_testing.ports import free_port, http_get

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

# -- Go's encoding/json, as strict as the driver's structs make it ----------------------
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)


class GoDecodeError(AssertionError):
    pass


def go_decode(value: Any, schema: Any, where: str = "$") -> Any:
    """Decode ``value`` (parsed JSON) as Go would into ``schema``: ``str``,
    ``bool``, ``"int64"``, ``"int32"``, ``"net.IP"``, ``[schema]``,
    ``{"map": schema}`` or a struct ``{json_key: schema}``."""
    if value is None:
        return None  # Go leaves the zero value
    if schema is str:
        if not isinstance(value, str):
            raise GoDecodeError(f"{where}: cannot unmarshal {type(value).__name__} into string")
        return value
    if schema is bool:
        if not isinstance(value, bool):
            raise GoDecodeError(f"{where}: cannot unmarshal {type(value).__name__} into bool")
        return value
    if schema in ("int64", "int32"):
        low, high = INT64 if schema == "int64" else INT32
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise GoDecodeError(f"{where}: cannot unmarshal {value!r} into {schema}")
        return value
    if schema == "net.IP":
        if not isinstance(value, str):
            raise GoDecodeError(f"{where}: net.IP wants a string")
        if value == "":
            return None
        try:
            return ipaddress.ip_address(value)
        except ValueError as exc:
            raise GoDecodeError(f"{where}: invalid IP address {value!r}") from exc
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise GoDecodeError(f"{where}: cannot unmarshal {type(value).__name__} into slice")
        return [go_decode(item, schema[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(schema, dict) and set(schema) == {"map"}:
        if not isinstance(value, dict):
            raise GoDecodeError(f"{where}: cannot unmarshal into map")
        return {k: go_decode(v, schema["map"], f"{where}.{k}") for k, v in value.items()}
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise GoDecodeError(f"{where}: cannot unmarshal {type(value).__name__} into struct")
        # Go matches keys case-insensitively and ignores the ones it does not know
        lowered = {k.lower(): v for k, v in value.items()}
        return {key: go_decode(lowered.get(key.lower()), sub, f"{where}.{key}")
                for key, sub in schema.items()}
    raise TypeError(schema)


def go_is_global_unicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    """Go's net.IP.IsGlobalUnicast, which the driver asks of each network's ip."""
    if ip is None:
        return False
    return not (ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_unspecified
                or ip == ipaddress.IPv4Address("255.255.255.255"))


#: the driver's own structs (rkt/api.go)
DRIVER_NETINFO = {"netName": str, "netConf": str, "pluginPath": str, "ifName": str,
                  "ip": "net.IP", "args": str}
DRIVER_POD = {"name": str, "state": str, "networks": [DRIVER_NETINFO]}
#: rkt's api/v1 (api/v1/json.go), what other clients decode
V1_MOUNT = {"name": str, "container_path": str, "host_path": str, "read_only": bool}
V1_APP = {"name": str, "state": str, "created_at": "int64", "started_at": "int64",
          "finished_at": "int64", "exit_code": "int32", "image_id": str,
          "mounts": [V1_MOUNT], "user_annotations": {"map": str}, "user_labels": {"map": str}}
V1_POD = {"name": str, "state": str, "networks": [DRIVER_NETINFO], "app_names": [str],
          "apps": [V1_APP], "created_at": "int64", "started_at": "int64",
          "user_annotations": {"map": str}, "user_labels": {"map": str}}
#: enough of appc's PodManifest for the driver's rktManifestMakePortMap
APPC_POD = {"acKind": str, "acVersion": str,
            "apps": [{"name": str, "image": {"name": str, "id": str},
                      "app": {"exec": [str], "ports": [{"name": str, "port": "int32"}]}}]}

RE_RKT_VERSION = re.compile(r"rkt [vV]ersion[:]? (\d[.\d]+)")
RE_APPC_VERSION = re.compile(r"appc [vV]ersion[:]? (\d[.\d]+)")
MIN_RKT_VERSION = (1, 27, 0)


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture
def env(rkt_env: RktEnv) -> RktEnv:
    return rkt_env


@pytest.fixture
def task_image(aci_builder: AciBuilder) -> Path:
    return aci_builder.build(
        "task.aci", name="example.com/task", busybox=True, exec_=["/bin/sleep", "1000"],
        files={"etc/passwd": "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
               "etc/group": "root:x:0:\nnogroup:x:65534:\n"},
    )


@pytest.fixture
def mark() -> str:
    return str(random.randrange(10**8, 10**9))


def processes_with(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def rkt(env: RktEnv, *args: str) -> list[str]:
    """The command line the driver builds: rkt with our test dirs, then its arguments."""
    return [env.rkt_binary(), *env.global_flags(), *args]


# -- the replay ----------------------------------------------------------------------
def test_nomad_driver_task_lifecycle(env: RktEnv, task_image: Path, mark: str,
                                     tmp_path: Path) -> None:
    # Fingerprint: `rkt version`, two regexps, a minimum version
    out = subprocess.run([env.rkt_binary(), "version"], capture_output=True, text=True,
                         check=True).stdout.strip()
    rkt_match, appc_match = RE_RKT_VERSION.search(out), RE_APPC_VERSION.search(out)
    assert rkt_match is not None and appc_match is not None
    assert tuple(int(n) for n in rkt_match.group(1).split(".")) >= MIN_RKT_VERSION

    # StartTask: the task dir layout the driver mounts, a user volume read-only
    alloc_id, task = "0d3cf1e6-4c1a-4a5e-9f57-3b1f1d1f2a10", "web_task"
    sanitized = task.replace("_", "-")
    dirs = {name: tmp_path / name for name in ("alloc", "local", "secrets", "config")}
    for directory in dirs.values():
        directory.mkdir()
        directory.chmod(0o777)
    (dirs["config"] / "settings").write_text("from the host\n")
    global_args = ["--insecure-options=all", "--debug=false"]
    prepare = [*global_args, "prepare", "--no-overlay=true"]
    for name in ("alloc", "local", "secrets"):
        volume = f"{alloc_id}-{sanitized}-{name}"
        prepare += [f"--volume={volume},kind=host,source={dirs[name]}",
                    f"--mount=volume={volume},target=/{name}"]
    user_volume = f"{alloc_id}-{sanitized}-0"
    prepare += [f"--volume={user_volume},kind=host,source={dirs['config']},readOnly=true",
                f"--mount=volume={user_volume},target=/config"]
    prepare += ["--set-env=NOMAD_TASK_NAME=web_task", f"--set-env=NOMAD_ALLOC_ID={alloc_id}"]
    prepare += [str(task_image), "--exec=/bin/sh", "--memory=268435456", "--cpu=100",
                "--user=nobody", "--group=nogroup", "--", "-c",
                'id -u > /alloc/uid; echo "$NOMAD_TASK_NAME $1" > /alloc/env; '
                'cat /config/settings > /local/copy; '
                'touch /config/x 2>/dev/null || echo read-only > /alloc/ro; exec sleep "$2"',
                "sh", "argument", mark]
    prepared = subprocess.run(rkt(env, *prepare), capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    uuid = prepared.stdout.strip()  # the driver takes all of stdout as the UUID
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", uuid)

    run_args = [*global_args, "run-prepared", "--net=host", uuid]
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("w") as out_file, stderr.open("w") as err_file:
        task_process = subprocess.Popen(rkt(env, *run_args), stdout=out_file, stderr=err_file)
    try:
        # the driver polls `status --format=json` and decodes it into its Pod
        deadline = time.monotonic() + 30
        while True:
            status = subprocess.run(rkt(env, "status", "--format=json", uuid),
                                    capture_output=True, text=True)
            assert status.returncode == 0, status.stderr
            pod = go_decode(json.loads(status.stdout), DRIVER_POD)
            if pod["state"] == "running" and processes_with(mark):
                break
            assert time.monotonic() < deadline, status.stdout
            time.sleep(0.2)
        assert pod["name"] == uuid
        assert pod["networks"] == []  # --net=host: the driver looks for none
        manifest = subprocess.run(rkt(env, "cat-manifest", uuid), capture_output=True,
                                  text=True, check=True)
        apps = go_decode(json.loads(manifest.stdout), APPC_POD)["apps"]
        assert len(apps) == 1 and apps[0]["app"]["exec"][0] == "/bin/sh"

        # the task ran as asked
        assert (dirs["alloc"] / "uid").read_text() == "65534\n"
        assert (dirs["alloc"] / "env").read_text() == "web_task argument\n"
        assert (dirs["local"] / "copy").read_text() == "from the host\n"
        assert (dirs["alloc"] / "ro").read_text() == "read-only\n"

        # ExecTask: `rkt enter UUID CMD ARGS...`
        entered = subprocess.run(rkt(env, "enter", uuid, "/bin/cat", "/alloc/env"),
                                 capture_output=True, text=True, timeout=60)
        assert entered.returncode == 0, entered.stderr
        assert entered.stdout == "web_task argument\n"

        # StopTask: SIGINT, then SIGKILL after the kill timeout (Nomad's default 5 s)
        task_process.send_signal(signal.SIGINT)
        try:
            code = task_process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            task_process.kill()
            code = task_process.wait()
    finally:
        if task_process.poll() is None:
            task_process.kill()
            task_process.wait()
    assert code == 0, stderr.read_text()
    deadline = time.monotonic() + 5
    while processes_with(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(mark) == []
    final = go_decode(json.loads(subprocess.run(
        rkt(env, "status", "--format=json", uuid), capture_output=True, text=True,
        check=True).stdout), V1_POD)
    assert final["state"] == "exited"
    assert final["apps"][0]["state"] == "exited"
    assert final["apps"][0]["exit_code"] == 128 + signal.SIGTERM  # the app's stop signal


@pytest.fixture
def web_image(aci_builder: AciBuilder) -> Path:
    """busybox httpd on port 80, declared as the port named ``http``."""
    manifest = image_manifest(
        "example.com/web", exec_=["/bin/sh", "-c", "mkdir -p /www && echo hello from the "
                                  "task > /www/index.html && exec httpd -f -p 80 -h /www"],
        app={"ports": [{"name": "http", "protocol": "tcp", "port": 80}]},
    )
    return aci_builder.build("web.aci", name="example.com/web", busybox=True,
                             files={"etc/passwd": "root:x:0:0::/:/bin/sh\n",
                                    "etc/group": "root:x:0:\n"}, manifest=manifest)


def test_nomad_driver_task_on_the_default_network(env: RktEnv, web_image: Path,
                                                  tmp_path: Path) -> None:
    """No ``net`` option: the driver passes no --net (rkt's default network),
    ``port_map { http = "http" }`` as ``prepare --port=http:HOSTPORT`` after the
    image, and the DNS options to ``run-prepared``; then it waits for
    ``networks[].ip`` (rktGetDriverNetwork) and maps the ports by the manifest's."""
    host_port = free_port()
    global_args = ["--insecure-options=all", "--debug=false"]
    prepare = [*global_args, "prepare", "--set-env=NOMAD_TASK_NAME=web", str(web_image),
               "--memory=268435456", "--cpu=100", f"--port=http:{host_port}"]
    prepared = subprocess.run(rkt(env, *prepare), capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    uuid = prepared.stdout.strip()
    assert prepared.stdout == uuid + "\n"  # only the UUID: the driver takes all of it
    run_args = [*global_args, "run-prepared", "--net=default", "--dns=192.0.2.53",
                "--dns-search=service.example", uuid]
    task = subprocess.Popen(rkt(env, *run_args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60  # the driver's networkDeadline
        while True:
            status = subprocess.run(rkt(env, "status", "--format=json", uuid),
                                    capture_output=True, text=True)
            assert status.returncode == 0, status.stderr
            pod = go_decode(json.loads(status.stdout), DRIVER_POD)
            if pod["state"] == "running":
                break
            assert time.monotonic() < deadline and task.poll() is None, status.stdout
            time.sleep(0.2)
        # the network is there before the pod runs: the driver's first look finds it
        good = [n for n in pod["networks"] if go_is_global_unicast(n["ip"])]
        assert good, status.stdout
        assert good[0]["netName"] == "default"
        assert good[0]["ip"] in ipaddress.ip_network("172.16.28.0/24")  # default's subnet
        manifest = go_decode(json.loads(subprocess.run(
            rkt(env, "cat-manifest", uuid), capture_output=True, text=True,
            check=True).stdout), APPC_POD)
        assert [p["name"] for p in manifest["apps"][0]["app"]["ports"]] == ["http"]
        assert http_get(f"http://127.0.0.1:{host_port}/") == "hello from the task\n"
        resolv = subprocess.run(rkt(env, "enter", uuid, "/bin/cat", "/etc/resolv.conf"),
                                capture_output=True, text=True, timeout=60)
        assert "nameserver 192.0.2.53" in resolv.stdout
        assert "search service.example" in resolv.stdout
        task.send_signal(signal.SIGINT)
        code = task.wait(timeout=30)
    finally:
        if task.poll() is None:
            task.kill()
            task.wait()
    assert code == 0, task.stderr.read() if task.stderr else ""
    final = json.loads(env.run("status", "--format=json", uuid).stdout)
    assert final["state"] == "exited" and final["apps"][0]["exit_code"] == 143


def test_nomad_port_map_naming_no_port_of_the_image(env: RktEnv, web_image: Path) -> None:
    refused = env.run("--insecure-options=all", "prepare", web_image, "--port=https:18443")
    assert_one_line_error(refused, 'the pod\'s apps have no port "https" (their ports: http)')
    assert list((env.data_dir / "pods").glob("*/*")) == []


# -- the JSON models -----------------------------------------------------------------
def test_status_and_list_json_decode_as_rkt_1_clients(env: RktEnv, task_image: Path,
                                                      mark: str, tmp_path: Path) -> None:
    """Prepared, running and exited pods, in ``status`` and ``list``, compact and pretty,
    decoded into rkt's api/v1 structs."""
    data = tmp_path / "data"
    data.mkdir()
    prepared = env.run("--insecure-options=image", "prepare", f"--volume=data,kind=host,"
                       f"source={data},readOnly=true", "--user-annotation=team=web",
                       "--user-label=tier=front", str(task_image), "--exec=/bin/sleep",
                       "--mount=volume=data,target=/data", "--", mark, check=True)
    uuid = prepared.stdout.strip()

    def status(*flags: str) -> dict[str, Any]:
        result = env.run("status", *flags, uuid, check=True)
        decoded: dict[str, Any] = go_decode(json.loads(result.stdout), V1_POD)
        return decoded

    before = status("--format=json")
    assert before["state"] == "prepared" and before["apps"][0]["state"] == "created"
    assert before["app_names"] == ["task"] and before["started_at"] is None
    assert before["user_annotations"] == {"team": "web"}
    assert before["user_labels"] == {"tier": "front"}
    mounts = before["apps"][0]["mounts"]
    assert mounts == [{"name": "data", "container_path": "/data", "host_path": str(data),
                       "read_only": True}]
    created_ns = before["created_at"]
    assert abs(created_ns / 1e9 - time.time()) < 600  # nanoseconds since the epoch

    process = subprocess.Popen(rkt(env, "run-prepared", uuid), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        env.run("status", "--wait-ready=30s", uuid, check=True)
        running = status("--format=json")
        assert running["state"] == "running" and running["apps"][0]["state"] == "running"
        assert running["started_at"] >= created_ns
        assert json.loads(env.run("status", "--format=json", uuid).stdout)["pid"] > 0
        listed = json.loads(env.run("list", "--format=json").stdout)
        assert [go_decode(p, V1_POD)["name"] for p in listed] == [uuid]
        # json-pretty is the same document, tab-indented as Go's MarshalIndent
        pretty = env.run("status", "--format=json-pretty", uuid).stdout
        assert "\n\t\"name\"" in pretty
        assert json.loads(pretty)["name"] == uuid
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    after = status("--format=json")
    assert after["state"] == "exited"
    assert "pid" not in json.loads(env.run("status", "--format=json", uuid).stdout)
    app = after["apps"][0]
    assert app["state"] == "exited" and app["exit_code"] == 143
    assert app["finished_at"] >= app["started_at"] >= created_ns
    compact = env.run("list", "--format=json").stdout
    assert ", " not in compact and ": " not in compact  # Go's compact encoding


def test_go_decode_is_as_strict_as_go() -> None:
    """The stand-in refuses what encoding/json refuses (so the tests above mean something)."""
    with pytest.raises(GoDecodeError):
        go_decode({"name": 5}, DRIVER_POD)
    with pytest.raises(GoDecodeError):
        go_decode({"created_at": 1.5}, V1_POD)
    with pytest.raises(GoDecodeError):
        go_decode({"networks": [{"ip": "not-an-ip"}]}, DRIVER_POD)
    with pytest.raises(GoDecodeError):
        go_decode({"apps": [{"exit_code": 2**40}]}, V1_POD)
    assert go_decode({"Name": "x", "extra": 1}, DRIVER_POD)["name"] == "x"
