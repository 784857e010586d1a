"""Pod networks through the real ``rkt`` command, the nspawn stage1 and Debian's CNI plugins.

Safety: traffic goes only between the host and the namespaces these tests make
(the pods' own addresses, 127.0.0.1). User networks get their own bridge name,
a subnet no route on the host uses, and a host-local ``dataDir`` in the test's
temp dir; the built-in ``default`` network's leases are shared with every rkt on
the machine, as host-local shares them (one lock file per network).

"Nothing left" is checked for what belongs to the test's pods: namespaces named
after them, links, nat rules naming them and host-local leases holding their
UUIDs. The portmap plugin's shared chains (``CNI-HOSTPORT-*``, jumped to from
PREROUTING/OUTPUT/POSTROUTING) stay, as they do for podman and containerd: other
pods on the machine may be using them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.conformance.network import free_subnet
from rkt_testing import AciBuilder, RktEnv, assert_one_line_error, wait_for_file
from rkt_testing.aci import image_manifest
from rkt_testing.plugin import FLY, needs_root
from rkt_testing.ports import free_port, http_get

pytestmark = [
    needs_root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
    pytest.mark.skipif(not Path("/usr/lib/cni/ptp").exists(),
                       reason="needs Debian's containernetworking-plugins"),
    pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables"),
]

LEASES = Path("/var/lib/cni/networks")
PASSWD = {"etc/passwd": "root:x:0:0::/:/bin/sh\n", "etc/group": "root:x:0:\n"}


def run(target: RktEnv, *args: str | Path,
        **kwargs: object) -> subprocess.CompletedProcess[str]:
    return target.run("--insecure-options=image", *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def addr_image(aci_builder: AciBuilder) -> Path:
    """Prints its IPv4 addresses, then its resolv.conf and hosts."""
    return aci_builder.build(
        "addr.aci", name="example.com/addr", busybox=True, files=PASSWD,
        exec_=["/bin/sh", "-c", "ip -4 -o addr; echo ---; cat /etc/resolv.conf; echo ---; "
                                "cat /etc/hosts"],
    )


@pytest.fixture
def web_image(aci_builder: AciBuilder) -> Path:
    """busybox httpd on port 80, declared as the port named ``http``."""
    manifest = image_manifest(
        "example.com/web", exec_=["/bin/sh", "-c", "mkdir -p /www && echo hello from the pod "
                                  "> /www/index.html && exec httpd -f -p 80 -h /www"],
        app={"ports": [{"name": "http", "protocol": "tcp", "port": 80}]},
    )
    return aci_builder.build("web.aci", name="example.com/web", busybox=True, files=PASSWD,
                             manifest=manifest)


def addresses(output: str) -> dict[str, str]:
    """``ip -4 -o addr`` lines as {interface: address}."""
    found = {}
    for line in output.split("---")[0].splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "inet":
            found[fields[1]] = fields[3].split("/")[0]
    return found


def host_traces(uuid: str) -> list[str]:
    """What the host holds for the pod: namespace, nat rules, leases naming it."""
    traces = [f"netns {p.name}" for p in Path("/var/run/netns").glob(f"rkt-{uuid}*")]
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    traces += [f"nat {line}" for line in nat.splitlines() if uuid in line]
    for lease in LEASES.glob("*/*"):
        try:
            if uuid in lease.read_text():
                traces.append(f"lease {lease}")
        except OSError:
            continue
    return traces


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def pod_uuid(env: RktEnv) -> str:
    rows = env.run("list", "--no-legend", "--full", check=True).stdout.split("\n")
    return rows[0].split()[0]


def collect(env: RktEnv) -> None:
    env.run("gc", "--grace-period=0s", check=True)


@pytest.fixture
def bridge_net(rkt_env: RktEnv, tmp_path: Path) -> Iterator[tuple[str, ipaddress.IPv4Network]]:
    """A user ``.conflist``: bridge + tuning (a chain), its own bridge, subnet and lease dir."""
    name = f"rkt-test-{os.getpid()}-{random.randint(0, 9999)}"
    bridge = f"rkt-t{random.randint(0, 0xffff):04x}"
    subnet = free_subnet()
    net_d = rkt_env.local_config / "net.d"
    net_d.mkdir(exist_ok=True)
    (net_d / "10-bridge.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": name,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "subnet": str(subnet),
                      "dataDir": str(tmp_path / "leases")},
             "dns": {"nameservers": [str(subnet[53])], "search": ["bridge.test"]}},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_redirects": "0"}},
        ],
    }))
    try:
        yield name, subnet
    finally:
        rkt_env.run("gc", "--grace-period=0s")
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


# -- acceptance 1 --------------------------------------------------------------------------
def test_default_private_net_none_and_host(rkt_env: RktEnv, addr_image: Path) -> None:
    default = run(rkt_env, "run", addr_image)
    assert default.returncode == 0, default.stderr
    assert ipaddress.ip_address(addresses(default.stdout)["eth0"]) in ipaddress.ip_network(
        "172.16.28.0/24")
    uuid = pod_uuid(rkt_env)
    listed = rkt_env.run("list", "--no-legend", check=True).stdout
    assert f"default:ip4={addresses(default.stdout)['eth0']}" in listed
    info = json.loads(rkt_env.run("list", "--format=json", check=True).stdout)[0]["networks"]
    assert info[0]["netName"] == "default" and info[0]["ifName"] == "eth0"
    assert info[0]["ip"] == addresses(default.stdout)["eth0"]
    assert info[0]["pluginPath"] == "/usr/lib/cni/ptp"
    assert host_traces(uuid) != []
    collect(rkt_env)
    assert host_traces(uuid) == []

    private = run(rkt_env, "run", "--private-net", addr_image)
    assert "eth0" in addresses(private.stdout), private.stderr
    collect(rkt_env)

    none = run(rkt_env, "run", "--net=none", addr_image)
    assert addresses(none.stdout) == {"lo": "127.0.0.1"}, none.stderr
    collect(rkt_env)

    host = run(rkt_env, "run", "--net=host", addr_image)
    host_addresses = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True,
                                    text=True).stdout
    assert set(addresses(host.stdout)) & set(addresses(host_addresses)) - {"lo"}, host.stdout
    assert rkt_env.run("list", "--no-legend", check=True).stdout.split()[-1] != "default"


def test_default_restricted_and_static_ip(rkt_env: RktEnv, addr_image: Path) -> None:
    result = run(rkt_env, "run", "--net=default-restricted", addr_image)
    address = ipaddress.ip_address(addresses(result.stdout)["eth0"])
    assert address in ipaddress.ip_network("172.31.0.0/16"), result.stderr
    routes = run(rkt_env, "run", "--net=default-restricted", addr_image,
                 "--exec=/bin/ip", "--", "route")
    assert "default" not in routes.stdout  # reaches the host only
    collect(rkt_env)


def test_fly_supports_only_the_host_network(rkt_env: RktEnv, addr_image: Path) -> None:
    refused = run(rkt_env, "run", FLY, "--net=default", addr_image)
    assert_one_line_error(refused, "the fly stage1 supports only --net=host")
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []
    # fly's default is the host's network
    assert run(rkt_env, "run", FLY, addr_image).returncode == 0


# -- acceptance 2: port forwarding ----------------------------------------------------------
def host_veth_of(rkt_env: RktEnv, uuid: str) -> str:
    """The host end of a running pod's veth: the device of the host's route to it.
    (Other pods on this machine may add veths meanwhile: tests follow only this one.)"""
    status = json.loads(rkt_env.run("status", "--format=json", uuid, check=True).stdout)
    route = subprocess.run(["ip", "-o", "route", "show", status["networks"][0]["ip"]],
                           capture_output=True, text=True, check=True).stdout.split()
    return route[route.index("dev") + 1]


def test_port_forwarding_from_the_host(rkt_env: RktEnv, web_image: Path,
                                       tmp_path: Path) -> None:
    port = free_port()
    uuid_file = tmp_path / "uuid"
    pod = subprocess.Popen(
        [rkt_env.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "run",
         f"--uuid-file-save={uuid_file}", f"--port=http:{port}", str(web_image)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert http_get(f"http://127.0.0.1:{port}/") == "hello from the pod\n"
        uuid = uuid_file.read_text()
        assert any("DNAT" in t for t in host_traces(uuid))
        host_veth = host_veth_of(rkt_env, uuid)
        # the port is forwarded already (by iptables: bind(2) would not see it)
        again = run(rkt_env, "run", f"--port=http:{port}", web_image)
        assert_one_line_error(again, f"host port {port}/tcp is already forwarded to another pod")
        # and a port a host process listens on
        with socket.socket() as listener:
            listener.bind(("0.0.0.0", 0))
            listener.listen()
            taken = listener.getsockname()[1]
            busy = run(rkt_env, "run", f"--port=http:{taken}", web_image)
            assert_one_line_error(busy, f"host port {taken}/tcp is in use")
        rkt_env.run("stop", uuid, check=True)
        pod.wait(timeout=30)
    finally:
        if pod.poll() is None:
            pod.kill()
    collect(rkt_env)
    assert host_traces(uuid) == []
    assert host_veth not in links()
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []


def test_check_of_a_running_pod(rkt_env: RktEnv, addr_image: Path, tmp_path: Path) -> None:
    """CNI CHECK of a running pod's attachment. (Not with --port: Debian's portmap
    1.1.1 fails its own CHECK looking for an IPv6 chain it never made.)"""
    from rkt.errors import NetworkError
    from rkt.net.pod import check_pod_network
    from rkt.pod.dirs import PodStore

    uuid_file = tmp_path / "uuid"
    pod = subprocess.Popen(
        [rkt_env.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "run",
         f"--uuid-file-save={uuid_file}", str(addr_image), "--exec=/bin/sleep", "--", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        uuid = _wait_for(uuid_file)
        rkt_env.run("status", "--wait-ready=20s", uuid, check=True)
        running = PodStore(rkt_env.data_dir).find(uuid)
        check_pod_network(running)
        namespace = f"rkt-{uuid}"
        subprocess.run(["ip", "-n", namespace, "route", "del", "default"], check=True)
        with pytest.raises(NetworkError, match='network "default": CNI plugin "ptp" '
                                               r"\(CHECK\) failed"):
            check_pod_network(running)
        rkt_env.run("stop", uuid, check=True)
        pod.wait(timeout=30)
    finally:
        if pod.poll() is None:
            pod.kill()
    collect(rkt_env)
    assert host_traces(uuid) == []


def test_port_refusals(rkt_env: RktEnv, web_image: Path) -> None:
    for net in ("--net=host", "--net=none"):
        refused = run(rkt_env, "run", net, "--port=http:18080", web_image)
        assert_one_line_error(refused, f"--port needs a contained network, not {net}")
    unknown = run(rkt_env, "run", "--port=https:18443", web_image)
    assert_one_line_error(unknown, 'have no port "https" (their ports: http)')
    assert_one_line_error(run(rkt_env, "run", "--port=http", web_image),
                          "expected NAME:[HOSTIP:]HOSTPORT")
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []


# -- acceptance 3: a user bridge network from a .conflist -------------------------------------
def test_two_pods_on_a_user_bridge_reach_each_other(
    rkt_env: RktEnv, addr_image: Path, bridge_net: tuple[str, ipaddress.IPv4Network],
    tmp_path: Path,
) -> None:
    name, subnet = bridge_net
    uuid_file = tmp_path / "uuid"
    server = subprocess.Popen(
        [rkt_env.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "run",
         f"--uuid-file-save={uuid_file}", f"--net={name}", str(addr_image),
         "--exec=/bin/sleep", "--", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        rkt_env.run("status", "--wait-ready=20s", _wait_for(uuid_file), check=True)
        status = rkt_env.run("status", uuid_file.read_text(), check=True).stdout
        server_ip = status.split(f"networks={name}:ip4=")[1].split()[0]
        assert ipaddress.ip_address(server_ip) in subnet
        client = run(rkt_env, "run", f"--net={name}", addr_image, "--exec=/bin/sh", "--", "-c",
                     f"ping -c 1 -W 5 {server_ip} && cat /etc/resolv.conf && "
                     "cat /proc/sys/net/ipv4/conf/eth0/accept_redirects")
        assert client.returncode == 0, client.stdout + client.stderr
        assert "1 packets received" in client.stdout
        # the DNS the bridge plugin returned, and the tuning plugin ran after it in the chain
        assert f"# Generated by rkt run\nsearch bridge.test\nnameserver {subnet[53]}\n" \
            in client.stdout
        assert client.stdout.rstrip().endswith("0")
        static = run(rkt_env, "run", f"--net={name}:IP={server_ip}", addr_image)
        assert_one_line_error(static, f"{server_ip}")
        rkt_env.run("stop", uuid_file.read_text(), check=True)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()


def test_all_networks_in_file_name_order(
    rkt_env: RktEnv, addr_image: Path, bridge_net: tuple[str, ipaddress.IPv4Network],
) -> None:
    name, subnet = bridge_net
    result = run(rkt_env, "run", "--net=all", addr_image)
    found = addresses(result.stdout)
    # 10-bridge.conflist before the built-in 99-default.conf
    assert ipaddress.ip_address(found["eth0"]) in subnet, result.stdout + result.stderr
    assert ipaddress.ip_address(found["eth1"]) in ipaddress.ip_network("172.16.28.0/24")
    networks = json.loads(rkt_env.run("list", "--format=json", check=True).stdout)[0]["networks"]
    assert [(n["netName"], n["ifName"]) for n in networks] == [(name, "eth0"),
                                                                ("default", "eth1")]
    uuid = pod_uuid(rkt_env)
    collect(rkt_env)
    assert host_traces(uuid) == []


def _wait_for(path: Path) -> str:
    return wait_for_file(path, timeout=20).read_text()


# -- acceptance 4: kill -9 of rkt run ------------------------------------------------------
def test_kill_9_of_rkt_then_gc_leaves_nothing(rkt_env: RktEnv, addr_image: Path,
                                              tmp_path: Path) -> None:
    before = links()
    uuid_file = tmp_path / "uuid"
    pod = subprocess.Popen(
        [rkt_env.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "run",
         f"--uuid-file-save={uuid_file}", str(addr_image), "--exec=/bin/sleep", "--", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    uuid = _wait_for(uuid_file)
    rkt_env.run("status", "--wait-ready=20s", uuid, check=True)
    assert f"netns rkt-{uuid}" in host_traces(uuid)
    host_veth = host_veth_of(rkt_env, uuid)
    assert host_veth in links() - before
    pod.kill()
    pod.wait()
    rkt_env.run("status", "--wait=30s", uuid, check=True)
    collect(rkt_env)
    assert host_traces(uuid) == []
    assert host_veth not in links()


# -- acceptance 5 and DNS ------------------------------------------------------------------
def test_run_prepared_with_dns_flags(rkt_env: RktEnv, addr_image: Path) -> None:
    prepared = run(rkt_env, "prepare", "--quiet", addr_image)
    uuid = prepared.stdout.strip()
    result = rkt_env.run("run-prepared", "--net=default", "--dns=8.8.8.8", uuid)
    assert result.returncode == 0, result.stderr
    resolv = result.stdout.split("---")[1].strip()
    assert resolv == "# Generated by rkt run\nnameserver 8.8.8.8"


def test_dns_and_hosts_flags_win_over_the_image(rkt_env: RktEnv,
                                                aci_builder: AciBuilder) -> None:
    image = aci_builder.build(
        "own-etc.aci", name="example.com/own-etc", busybox=True,
        files={**PASSWD, "etc/resolv.conf": "nameserver 192.0.2.1\n",
               "etc/hosts": "127.0.0.1 localhost image-hosts\n"},
        exec_=["/bin/sh", "-c", "cat /etc/resolv.conf; echo ---; cat /etc/hosts"],
    )
    own = run(rkt_env, "run", "--net=none", image)
    assert own.stdout == "nameserver 192.0.2.1\n---\n127.0.0.1 localhost image-hosts\n"
    flags = run(rkt_env, "run", "--net=none", "--dns=192.0.2.53,192.0.2.54",
                "--dns-search=a.test", "--dns-opt=ndots:3", "--dns-domain=pod.test",
                "--hosts-entry=192.0.2.10=db", "--hosts-entry=192.0.2.10=db2", image)
    resolv, hosts = flags.stdout.split("---\n")
    assert resolv == ("# Generated by rkt run\nsearch a.test\nnameserver 192.0.2.53\n"
                      "nameserver 192.0.2.54\noptions ndots:3\ndomain pod.test\n"), flags.stderr
    assert hosts.endswith("192.0.2.10\tdb db2\n") and "image-hosts" not in hosts
    host = run(rkt_env, "run", "--net=none", "--dns=host", "--hosts-entry=host", image)
    assert host.stdout == (Path("/etc/resolv.conf").read_text() + "---\n"
                           + Path("/etc/hosts").read_text())
    # the image's files were not written to
    again = run(rkt_env, "run", "--net=none", image)
    assert again.stdout == own.stdout


def test_dns_flags_win_over_a_volume(rkt_env: RktEnv, aci_builder: AciBuilder,
                                     tmp_path: Path) -> None:
    image = aci_builder.build("cat.aci", name="example.com/cat", busybox=True, files=PASSWD,
                              exec_=["/bin/cat", "/etc/resolv.conf"])
    volume = tmp_path / "resolv.conf"
    volume.write_text("nameserver 192.0.2.99\n")
    flags = ("--volume=dns,kind=host,source=" + str(volume), image,
             "--mount=volume=dns,target=/etc/resolv.conf")
    assert run(rkt_env, "run", "--net=none", *flags).stdout == "nameserver 192.0.2.99\n"
    over = run(rkt_env, "run", "--net=none", "--dns=192.0.2.1", *flags)
    assert over.stdout == "# Generated by rkt run\nnameserver 192.0.2.1\n", over.stderr
    assert volume.read_text() == "nameserver 192.0.2.99\n"


# -- bad input --------------------------------------------------------------------------------
def _write_plugin(net_d: Path, name: str, body: str) -> None:
    path = net_d / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize(("files", "flag", "fragments"), [
    ({}, "--net=nope,other", ("networks not found: nope, other",)),
    ({"10-bad.conf": "{"}, "--net=default", ("10-bad.conf: not valid JSON",)),
    ({"10-x.conflist": '{"name": "x", "cniVersion": "1.0.0", "plugins": [{"type": "nope"}]}'},
     "--net=x", ('CNI plugin "nope" not found',)),
    ({"10-x.conf": '{"name": "x", "cniVersion": "1.0.0", "type": "crash"}'}, "--net=x",
     ('network "x": CNI plugin "crash" (ADD) failed: it broke',)),
    ({"10-x.conf": '{"name": "x", "cniVersion": "1.0.0", "type": "garbage"}'}, "--net=x",
     ('CNI plugin "garbage" (ADD) returned an invalid result: <html>',)),
    ({"10-x.conf": '{"name": "x", "cniVersion": "1.0.0", "type": "hang"}'}, "--net=x",
     ('CNI plugin "hang" (ADD) did not finish within 1 s',)),
    ({}, "--net=default:IP=172.16.28.300", ("CNI plugin", "ptp")),
    ({}, "--net=host:IP=1.2.3.4", ("--net=host:IP=1.2.3.4: host takes no arguments",)),
    ({}, "--dns=not-an-ip", ('--dns: "not-an-ip" is not an IP address',)),
])
def test_bad_networks_leave_nothing(rkt_env: RktEnv, addr_image: Path, files: dict[str, str],
                                    flag: str, fragments: tuple[str, ...]) -> None:
    net_d = rkt_env.local_config / "net.d"
    net_d.mkdir(exist_ok=True)
    for name, text in files.items():
        (net_d / name).write_text(text)
    # plugins are looked up in net.d first (rkt 1.x): these misbehave on purpose
    _write_plugin(net_d, "crash", "echo it broke >&2; exit 1")
    _write_plugin(net_d, "garbage", "echo '<html>oops</html>'")
    _write_plugin(net_d, "hang", "exec sleep 60")
    result = run(rkt_env, "run", flag, addr_image, env={"RKT_CNI_TIMEOUT": "1"})
    assert_one_line_error(result, *fragments)
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []
    prepared = run(rkt_env, "prepare", "--quiet", addr_image).stdout.strip()
    again = rkt_env.run("run-prepared", flag, prepared, env={"RKT_CNI_TIMEOUT": "1"})
    assert_one_line_error(again, *fragments)
    assert host_traces(prepared) == []
    assert rkt_env.run("status", prepared).stdout.startswith("state=prepared")


def test_a_failure_after_one_attachment_tears_the_first_down(rkt_env: RktEnv,
                                                             addr_image: Path) -> None:
    net_d = rkt_env.local_config / "net.d"
    net_d.mkdir()
    # applied after the built-in default (99-default.conf): eth0 is up when eth1 fails
    (net_d / "zz-broken.conf").write_text('{"name": "broken", "cniVersion": "1.0.0", '
                                          '"type": "broken"}')
    _write_plugin(net_d, "broken", f'echo "$CNI_CONTAINERID" > {net_d}/uuid; '
                                   "echo 'no luck' >&2; exit 1")
    result = run(rkt_env, "run", "--net=default,broken", addr_image)
    assert_one_line_error(result, 'network "broken": CNI plugin "broken" (ADD) failed: no luck')
    uuid = (net_d / "uuid").read_text().strip()
    assert host_traces(uuid) == []
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []


def test_teardown_is_idempotent(rkt_env: RktEnv, addr_image: Path) -> None:
    from rkt.net.pod import teardown_pod_network
    from rkt.pod.dirs import PodStore

    assert run(rkt_env, "run", addr_image).returncode == 0
    pod = PodStore(rkt_env.data_dir).find(pod_uuid(rkt_env))
    assert host_traces(pod.uuid) != []
    assert teardown_pod_network(pod) == []
    assert host_traces(pod.uuid) == []
    assert teardown_pod_network(pod) == []
    collect(rkt_env)
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []


def test_an_exhausted_subnet(rkt_env: RktEnv, addr_image: Path, tmp_path: Path) -> None:
    subnet = free_subnet()
    net_d = rkt_env.local_config / "net.d"
    net_d.mkdir()
    name = f"rkt-tiny-{os.getpid()}"
    one = str(subnet[10])
    (net_d / "10-tiny.conf").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": name, "type": "ptp",
        "ipam": {"type": "host-local", "subnet": str(subnet), "rangeStart": one,
                 "rangeEnd": one, "dataDir": str(tmp_path / "leases")}}))
    uuid_file = tmp_path / "uuid"
    first = subprocess.Popen(
        [rkt_env.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "run",
         f"--uuid-file-save={uuid_file}", f"--net={name}", str(addr_image),
         "--exec=/bin/sleep", "--", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        rkt_env.run("status", "--wait-ready=20s", _wait_for(uuid_file), check=True)
        second = run(rkt_env, "run", f"--net={name}", addr_image)
        assert_one_line_error(second, f'network "{name}"', "no IP addresses available")
        rkt_env.run("stop", uuid_file.read_text(), check=True)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    collect(rkt_env)
    assert host_traces(uuid_file.read_text()) == []
