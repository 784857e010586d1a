"""The CNI plugin protocol (rkt.net.cni), flag parsing and network configs, without root.

The plugins here are small shell scripts written by the tests: real executables
run exactly as a CNI plugin is run, standing in for plugins that misbehave in
ways the reference plugins never do (garbage, crashes, hangs), and recording
what they were given. The reference plugins themselves are driven as root in
test_pod_networks.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rkt.errors import NetworkError, UsageError
from rkt.net import cni
from rkt.net.config import BUILTINS, parse_config, select_networks
from rkt.net.dns import pod_hosts, pod_resolv_conf
from rkt.net.request import (
    DnsRequest,
    NetSelection,
    parse_dns,
    parse_hosts_entries,
    parse_nets,
    parse_ports,
)

RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
          "ips": [{"address": "10.9.0.5/24", "gateway": "10.9.0.1", "interface": 0}],
          "dns": {"nameservers": ["10.9.0.53"], "search": ["pod.test"]}}


def plugin(directory: Path, name: str, body: str) -> Path:
    """A plugin that logs its command, env and stdin to ``<dir>/calls``, then runs ``body``."""
    path = directory / name
    path.write_text(
        "#!/bin/sh\n"
        "input=$(cat)\n"
        f'printf \'%s %s %s %s %s %s\\n\' "{name}" "$CNI_COMMAND" "$CNI_IFNAME" '
        '"$CNI_ARGS" "$CNI_CONTAINERID" "$CNI_NETNS" >> "$(dirname "$0")/calls"\n'
        f'printf \'%s\\n\' "$input" > "$(dirname "$0")/{name}.$CNI_COMMAND.json"\n'
        + body + "\n"
    )
    path.chmod(0o755)
    return path


def where(directory: Path) -> cni.Invocation:
    return cni.Invocation("uuid-1", "/run/netns/x", "eth0", "IP=10.9.0.5", (str(directory),))


def test_add_chain_passes_name_version_prev_result_and_runtime_config(tmp_path: Path) -> None:
    plugin(tmp_path, "first", f"echo '{json.dumps(RESULT)}'")
    plugin(tmp_path, "second", 'printf \'%s\' "$input" | sed \'s/.*"prevResult"://; s/}$//\'')
    config = parse_config(tmp_path / "n.conflist", json.dumps({
        "cniVersion": "1.0.0", "name": "chain",
        "plugins": [{"type": "first", "x": 1},
                    {"type": "second", "capabilities": {"portMappings": True}}],
    }).encode())
    runner = cni.PluginRunner((str(tmp_path),))
    result = cni.add(runner, config, "1.0.0", where(tmp_path), {"portMappings": [{"a": 1}]})
    assert cni.result_addresses(result)[0].ip == "10.9.0.5"
    first = json.loads((tmp_path / "first.ADD.json").read_text())
    assert first == {"type": "first", "x": 1, "name": "chain", "cniVersion": "1.0.0"}
    second = json.loads((tmp_path / "second.ADD.json").read_text())
    assert second["prevResult"] == RESULT
    assert second["runtimeConfig"] == {"portMappings": [{"a": 1}]}
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["first ADD eth0 IP=10.9.0.5 uuid-1 /run/netns/x",
                     "second ADD eth0 IP=10.9.0.5 uuid-1 /run/netns/x"]


def test_del_runs_the_chain_backwards_with_the_cached_result(tmp_path: Path) -> None:
    plugin(tmp_path, "first", "exit 0")
    plugin(tmp_path, "second", "exit 0")
    config = parse_config(tmp_path / "n.conflist", json.dumps({
        "cniVersion": "0.4.0", "name": "chain", "plugins": [{"type": "first"},
                                                            {"type": "second"}]}).encode())
    runner = cni.PluginRunner((str(tmp_path),))
    assert cni.delete(runner, config, "0.4.0", where(tmp_path), {}, RESULT) == []
    assert [c.split()[:2] for c in (tmp_path / "calls").read_text().splitlines()] == [
        ["second", "DEL"], ["first", "DEL"]]
    assert json.loads((tmp_path / "first.DEL.json").read_text())["prevResult"] == RESULT
    # before 0.4.0 DEL gets no result, and CHECK does not exist
    cni.delete(runner, config, "0.3.1", where(tmp_path), {}, RESULT)
    assert "prevResult" not in json.loads((tmp_path / "first.DEL.json").read_text())
    with pytest.raises(NetworkError, match="has no CHECK"):
        cni.check(runner, config, "0.3.1", where(tmp_path), {}, RESULT)
    cni.check(runner, config, "0.4.0", where(tmp_path), {}, RESULT)
    assert "first CHECK" in (tmp_path / "calls").read_text()


def test_a_failing_del_does_not_stop_the_others(tmp_path: Path) -> None:
    plugin(tmp_path, "first", "exit 0")
    plugin(tmp_path, "second", 'echo \'{"code": 11, "msg": "gone"}\'; exit 1')
    config = parse_config(tmp_path / "n.conflist", json.dumps({
        "cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "first"},
                                                        {"type": "second"}]}).encode())
    errors = cni.delete(cni.PluginRunner((str(tmp_path),)), config, "1.0.0",
                        where(tmp_path), {}, None)
    assert errors == ['network "n": CNI plugin "second" (DEL) failed: gone']
    assert "first DEL" in (tmp_path / "calls").read_text()


@pytest.mark.parametrize(("body", "message"), [
    ('echo \'{"cniVersion": "1.0.0", "code": 7, "msg": "bad config", "details": "no x"}\'; '
     "exit 1", 'CNI plugin "p" (ADD) failed: bad config: no x'),
    ("echo 'segfault somewhere' >&2; exit 2", 'CNI plugin "p" (ADD) failed: segfault somewhere'),
    ("exit 3", 'CNI plugin "p" (ADD) failed: exit status 3'),
    ("echo 'this is not json'",
     'CNI plugin "p" (ADD) returned an invalid result: this is not json'),
    ("exec sleep 30", 'CNI plugin "p" (ADD) did not finish within 0.5 s'),
])
def test_plugin_failures_are_one_line(tmp_path: Path, body: str, message: str) -> None:
    plugin(tmp_path, "p", body)
    config = parse_config(tmp_path / "n.conf", b'{"cniVersion": "1.0.0", "name": "n", '
                                               b'"type": "p"}')
    runner = cni.PluginRunner((str(tmp_path),), timeout=0.5)
    with pytest.raises(NetworkError) as info:
        cni.add(runner, config, "1.0.0", where(tmp_path), {})
    assert str(info.value) == f'network "n": {message}'
    assert "\n" not in str(info.value)


def test_missing_plugin(tmp_path: Path) -> None:
    runner = cni.PluginRunner((str(tmp_path), str(tmp_path / "other")))
    with pytest.raises(NetworkError, match=f'CNI plugin "nope" not found in {tmp_path}:'):
        runner.find("nope")


def test_version_negotiation_picks_the_newest_common_version(tmp_path: Path) -> None:
    for name, versions in (("a", '["0.3.1", "0.4.0", "1.0.0"]'), ("b", '["0.3.0", "0.4.0"]')):
        plugin(tmp_path, name, f'echo \'{{"cniVersion": "1.0.0", '
                               f'"supportedVersions": {versions}}}\'')
    runner = cni.PluginRunner((str(tmp_path),))
    undeclared = parse_config(tmp_path / "n.conflist", json.dumps(
        {"name": "n", "plugins": [{"type": "a"}, {"type": "b"}]}).encode())
    assert cni.negotiate_version(runner, undeclared) == "0.4.0"
    declared = undeclared._replace(cni_version="0.3.1")
    assert cni.negotiate_version(runner, declared) == "0.3.1"
    plugin(tmp_path, "b", 'echo \'{"cniVersion": "1.0.0", "supportedVersions": ["9.9.9"]}\'')
    with pytest.raises(NetworkError, match="share no CNI version"):
        cni.negotiate_version(runner, undeclared)


def test_results_of_old_and_new_versions() -> None:
    old = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.3/16", "gateway": "10.1.0.1"}}
    (address,) = cni.result_addresses(old)
    assert (address.ip, address.mask, address.gateway) == ("10.1.2.3", "255.255.0.0",
                                                           "10.1.0.1")
    (new,) = cni.result_addresses(RESULT)
    assert (new.ip, new.interface) == ("10.9.0.5", "eth0")


@pytest.mark.parametrize(("text", "message"), [
    (b"{", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"type": "ptp"}', 'no "name"'),
    (b'{"name": "x", "cniVersion": "7.0.0", "type": "ptp"}', 'unsupported cniVersion "7.0.0"'),
    (b'{"name": "x", "plugins": []}', '"plugins" must be a non-empty list'),
    (b'{"name": "x", "plugins": [{"type": "../../bin/sh"}]}', 'no valid "type"'),
])
def test_malformed_configs(tmp_path: Path, text: bytes, message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        parse_config(tmp_path / "x.conflist", text)


def test_selecting_networks(tmp_path: Path) -> None:
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    (net_d / "10-mine.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "bridge"}]}))
    (net_d / "50-default.conf").write_text(json.dumps(
        {"cniVersion": "0.4.0", "name": "default", "type": "bridge"}))
    (net_d / "README").write_text("not a config")
    picked = select_networks((NetSelection("default"), NetSelection("mine", (("IP", "1"),))),
                             tmp_path)
    # applied in file name order; the user's "default" replaces the built-in
    assert [(c.name, c.path, s.cni_args()) for c, s in picked] == [
        ("mine", str(net_d / "10-mine.conflist"), "IP=1"),
        ("default", str(net_d / "50-default.conf"), "")]
    everything = select_networks((NetSelection("all"),), tmp_path)
    assert [c.name for c, _ in everything] == ["mine", "default"]
    restricted = select_networks((NetSelection("default-restricted"),), tmp_path)
    assert restricted[0][0] == BUILTINS["default-restricted"]
    assert not restricted[0][0].masquerades and BUILTINS["default"].masquerades
    with pytest.raises(NetworkError, match=r"^networks not found: nope, other$"):
        select_networks((NetSelection("nope"), NetSelection("other")), tmp_path)


def test_net_flags() -> None:
    assert parse_nets([]) == ()
    assert parse_nets(["default"], private_net=True) == (NetSelection("default"),)
    assert parse_nets(["a:IP=10.0.0.2;X=y,b", "c"]) == (
        NetSelection("a", (("IP", "10.0.0.2"), ("X", "y"))), NetSelection("b"),
        NetSelection("c"))
    for bad, message in ((["a,a"], 'network "a" given more than once'),
                         (["host:x=y"], "host takes no arguments"),
                         (["all:x=y"], "all takes no arguments"),
                         (["host,default"], "--net=host cannot be combined"),
                         (["none,a"], "--net=none cannot be combined"),
                         (["a:IP"], '"IP" is not KEY=VALUE'),
                         (["b@d"], 'invalid network name "b@d"')):
        with pytest.raises(UsageError, match=message):
            parse_nets(bad)


def test_port_flags() -> None:
    assert parse_ports(["http:8080", "dns:127.0.0.1:5353"]) == (
        parse_ports(["http:8080"])[0], parse_ports(["dns:127.0.0.1:5353"])[0])
    assert parse_ports(["dns:127.0.0.1:5353"])[0].host_ip == "127.0.0.1"
    for bad, message in (("http", "expected NAME:"), ("http:0", 'invalid host port "0"'),
                         ("http:70000", "invalid host port"), ("http:x", "invalid host port"),
                         ("http:1.2.3:80", "invalid host IPv4 address"),
                         ("Bad Name:80", "invalid port name")):
        with pytest.raises(UsageError, match=message):
            parse_ports([bad])
    with pytest.raises(UsageError, match="host port 80 is already forwarded to port a"):
        parse_ports(["a:80", "b:80"])


def test_dns_flags_and_files() -> None:
    assert parse_dns([], [], [], None) == DnsRequest()
    flags = parse_dns(["8.8.8.8,1.1.1.1"], ["a.test", "b.test"], ["ndots:2"], "pod.test")
    assert pod_resolv_conf(flags, []) == (
        "# Generated by rkt run\nsearch a.test b.test\nnameserver 8.8.8.8\n"
        "nameserver 1.1.1.1\noptions ndots:2\ndomain pod.test\n")
    cni_dns = [{"nameservers": ["10.9.0.53"], "search": ["cni.test"]}]
    # flags > CNI > (the app's own: None)
    assert pod_resolv_conf(flags, cni_dns) == pod_resolv_conf(flags, [])
    assert pod_resolv_conf(DnsRequest(), cni_dns) == (
        "# Generated by rkt run\nsearch cni.test\nnameserver 10.9.0.53\n")
    assert pod_resolv_conf(parse_dns(["none"], [], [], None), cni_dns) is None
    assert pod_resolv_conf(DnsRequest(), []) is None
    assert parse_dns(["host"], [], [], None).mode == "host"
    for args, message in (((["host"], ["x"], [], None), "--dns=host cannot be combined"),
                          ((["8.8.8.8", "none"], [], [], None), "--dns=none cannot be"),
                          ((["example.com"], [], [], None), 'is not an IP address')):
        with pytest.raises(UsageError, match=message):
            parse_dns(*args)  # type: ignore[arg-type]


def test_hosts_entries() -> None:
    entries, host = parse_hosts_entries(["10.0.0.1=db,10.0.0.2=cache", "10.0.0.1=db2"])
    assert not host and entries == (("10.0.0.1", ("db", "db2")), ("10.0.0.2", ("cache",)))
    hosts = pod_hosts(entries, False, "rkt-x")
    assert hosts is not None and hosts.startswith("# Generated by rkt run\n127.0.0.1\t")
    assert hosts.endswith("10.0.0.1\tdb db2\n10.0.0.2\tcache\n")
    assert parse_hosts_entries(["host"]) == ((), True)
    for bad in ("db", "x=db", "10.0.0.1="):
        with pytest.raises(UsageError, match="--hosts-entry"):
            parse_hosts_entries([bad])
