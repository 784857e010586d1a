"""docs/stage1-contract.schema.json is the stage1 contract as the code has it (issue 16).

The schema is generated from ``rkt.pod.contract`` (``python -m
rkt.pod.contract_schema``); these tests regenerate it and compare, validate the
documents the records write and those a real nspawn pod has on disk against it,
and hold docs/stage1.md's field tables to it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from rkt.pod.contract import (
    NetAttachment,
    PodCgroups,
    PodNetwork,
    PodRuntime,
    ResolvedPod,
    Resources,
    SupervisorJob,
)
from rkt.pod.contract_schema import _sample, contract_schema, render
from rkt_testing import AciBuilder, RktEnv
from rkt_testing.plugin import needs_root, stage1_image_path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "stage1-contract.schema.json"
STAGE1_DOC = ROOT / "docs" / "stage1.md"


def validator(definition: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        {"$schema": schema["$schema"], "$defs": schema["$defs"],
         "$ref": f"#/$defs/{definition}"})


def python_object(value: Any) -> Any:
    """A record a backend receives as an object, as JSON-shaped data (its fields)."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: python_object(v) for k, v in value._asdict().items()}
    if isinstance(value, tuple | frozenset):
        return [python_object(v) for v in sorted(value, key=str)] if isinstance(
            value, frozenset) else [python_object(v) for v in value]
    return value


def test_the_checked_in_schema_is_what_the_models_generate() -> None:
    assert SCHEMA_FILE.read_text() == render(), (
        "regenerate it: python -m rkt.pod.contract_schema > docs/stage1-contract.schema.json")


def test_the_records_json_validates() -> None:
    # every field set, and then the optional ones null
    pod = _sample(ResolvedPod)
    job = _sample(SupervisorJob)
    validator("ResolvedPod").validate(json.loads(pod.to_json()))
    validator("SupervisorJob").validate(json.loads(job.to_json()))
    app = pod.apps[0]._replace(capabilities=None, seccomp=None, pre_start=None,
                               oom_score_adj=None, resources=Resources())
    validator("ResolvedPod").validate(json.loads(pod._replace(apps=(app,)).to_json()))
    placed = job.apps[0]._replace(app=app, overlay=None)
    validator("SupervisorJob").validate(
        json.loads(job._replace(apps=(placed,), ready_file=None).to_json()))
    bad = json.loads(pod.to_json())
    bad["apps"][0]["env"] = {"PATH": "/bin"}  # env is pairs, not an object
    assert not validator("ResolvedPod").is_valid(bad)
    del bad["apps"][0]["env"]
    assert not validator("ResolvedPod").is_valid(bad)


def test_a_pod_runtime_object_validates_by_its_fields() -> None:
    runtime = PodRuntime(
        hostname="h", interactive=True, net=("default",), debug=True,
        insecure=frozenset({"seccomp", "capabilities"}),
        cgroups=PodCgroups(2, ("/sys/fs/cgroup/machine.slice/rkt-x",)),
        network=PodNetwork(mode="contained", netns="/var/run/netns/rkt-x", attachments=(
            NetAttachment("default", "builtin:default", "/usr/lib/cni/ptp", "eth0",
                          ip="172.16.28.2", mask="255.255.255.0", gateway="172.16.28.1"),),
            resolv_conf="nameserver 1.1.1.1\n", hosts=None),
    )
    data = python_object(runtime)
    # a NetAttachment object has its fields; its JSON (net-info.json) other names
    data["network"]["attachments"] = [a.to_json() for a in runtime.network.attachments]
    validator("PodRuntime").validate(data)
    validator("PodRuntime").validate(python_object(PodRuntime()))


@needs_root
@pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn")
@pytest.mark.skipif(not stage1_image_path("nspawn").exists(),
                    reason="stage1 images not installed (run rkt install)")
def test_a_real_nspawn_pods_documents_validate(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    host = tmp_path / "host-data"
    host.mkdir()
    first = aci_builder.build("one.aci", name="example.com/one", busybox=True,
                              exec_=["/bin/sh", "-c", "echo one > /data/one"])
    # a failing app stops the others: "two" dies only once "one" has finished its
    # work, or "one" may be stopped (143) first on a loaded machine
    second = aci_builder.build("two.aci", name="example.com/two", busybox=True,
                               exec_=["/bin/sh", "-c", "i=0; while [ ! -e /data/one ]; do "
                                      "i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.05; "
                                      "done; sleep 1; kill -9 $$"])
    result = rkt_env.run(
        "--insecure-options=image", "run", "--stage1-name=coreos.com/rkt/stage1-nspawn",
        "--net=none", "--dns=192.0.2.53", f"--volume=data,kind=host,source={host}",
        "--volume=scratch,kind=empty", "--mount=volume=data,target=/data",
        "--mount=volume=scratch,target=/scratch", first, second)
    assert result.returncode == 137, result.stderr
    (pod,) = (rkt_env.data_dir / "pods" / "run").iterdir()
    rkt_dir = pod / "stage1" / "rootfs" / "rkt"
    apps = json.loads((rkt_dir / "apps.json").read_text())
    validator("ResolvedPod").validate(apps)
    assert apps["volumes"]["scratch"]["source"] == "sharedVolumes/scratch"
    runtime = json.loads((rkt_dir / "runtime.json").read_text())
    validator("SupervisorJob").validate(runtime)
    files = json.loads(SCHEMA_FILE.read_text())["$defs"]["files"]["properties"]
    jsonschema.validate((pod / "pid").read_text(), files["pid"])
    for app, code in (("one", "0"), ("two", "137")):
        text = (rkt_dir / "status" / app).read_text()
        jsonschema.validate(text, files["status"])
        assert text.strip() == code


# -- docs/stage1.md -----------------------------------------------------------------------
#: a field table's section heading names its record: "### `ResolvedApp` (`apps.json`)"
_HEADING = re.compile(r"^#{2,4} (.*)$", re.M)
_ROW = re.compile(r"^\| *(.+?) *\|", re.M)


def documented_fields() -> dict[str, set[str]]:
    """The names in the first column of the field table under each heading of
    docs/stage1.md that names a record (its first name in backquotes)."""
    text = STAGE1_DOC.read_text()
    found: dict[str, set[str]] = {}
    headings = list(_HEADING.finditer(text))
    for index, heading in enumerate(headings):
        record = re.match(r"[^`]*`(\w+)`", heading.group(1))
        if record is None:
            continue
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        names: set[str] = set()
        for row in _ROW.finditer(text[heading.end():end]):
            cell = row.group(1)
            if not cell.startswith("`"):
                continue  # the header row and its rule
            names.update(re.findall(r"`(\w+)`", cell))
        if names:
            found.setdefault(record.group(1), set()).update(names)
    return found


def test_stage1_md_names_every_field_of_the_schema_and_no_other() -> None:
    schema = contract_schema()
    documented = documented_fields()
    from rkt.pod import contract

    for name, definition in schema["$defs"].items():
        if name == "files":
            continue
        keys = set(definition["properties"])
        fields = set(getattr(contract, name)._fields)
        assert name in documented, f"docs/stage1.md has no field table for {name}"
        missing = keys - documented[name]
        assert not missing, f"docs/stage1.md does not describe {name}'s {sorted(missing)}"
        unknown = documented[name] - keys - fields
        assert not unknown, f"docs/stage1.md describes {name} fields the code lacks: {unknown}"
