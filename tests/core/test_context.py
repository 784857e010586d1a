"""The core context: the core runs without the command line, as an embedder would."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rkt.context import Runtime, StreamReporter
from rkt.errors import PluginError, UsageError
from rkt.fetching import fetch_image
from rkt_testing import AciBuilder, RktEnv


def _runtime(env: RktEnv, **kwargs: object) -> tuple[Runtime, io.StringIO]:
    stream = io.StringIO()
    runtime = Runtime(
        data_dir_override=env.data_dir, local_config=env.local_config,
        system_config=env.system_config, reporter=StreamReporter(stream),
        **kwargs,  # type: ignore[arg-type]
    )
    return runtime, stream


def test_an_image_is_fetched_with_a_runtime_and_no_cli(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    runtime, stream = _runtime(rkt_env, insecure=frozenset({"image"}))
    info = fetch_image(runtime, str(aci_builder.build()))
    assert info.name == "example.com/hello"
    assert "rkt: warning: image signature verification has been disabled" in stream.getvalue()
    listed = rkt_env.run("image", "list", "--format=json", check=True).stdout
    assert [image["id"] for image in json.loads(listed)] == [info.id]


def test_the_store_is_named_in_paths_d(rkt_env: RktEnv) -> None:
    (rkt_env.local_config / "paths.d").mkdir()
    (rkt_env.local_config / "paths.d" / "store.json").write_text(
        json.dumps({"rktKind": "paths", "rktVersion": "v1", "store": "elsewhere"})
    )
    runtime, _ = _runtime(rkt_env)
    with pytest.raises(PluginError, match='no image store named "elsewhere" is installed'):
        _ = runtime.store
    result = rkt_env.run("image", "list")
    assert result.returncode != 0
    assert result.stderr == 'rkt: no image store named "elsewhere" is installed\n'


def test_a_stream_reporter_cannot_review_keys(rkt_env: RktEnv) -> None:
    runtime, _ = _runtime(rkt_env)
    assert not runtime.reporter.can_ask()
    with pytest.raises(UsageError, match="unable to ask"):
        runtime.reporter.review_key("example.com", "key.gpg", object())  # type: ignore[arg-type]


def test_debug_shows_fetch_decisions(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    image = aci_builder.build()
    result = rkt_env.run("--debug", "--insecure-options=image", "fetch", image)
    assert result.returncode == 0, result.stderr
    assert f'rkt: debug: rkt.fetching: image "{image}": kind file' in result.stderr
    assert "rkt: debug: rkt.fetching: fetching" in result.stderr
    quiet = rkt_env.run("--insecure-options=image", "fetch", image)
    assert "debug" not in quiet.stderr


def test_an_unknown_url_scheme_names_the_missing_fetcher(rkt_env: RktEnv) -> None:
    result = rkt_env.run("--insecure-options=image", "fetch", "nothere://example.com/x")
    assert result.returncode != 0
    assert result.stderr == (
        'rkt: no fetcher is installed for "nothere" images ("nothere://example.com/x")\n'
    )


def test_docker_without_its_plugin_is_named_not_misread(rkt_env: RktEnv) -> None:
    result = rkt_env.run("--insecure-options=image", "fetch", "docker://busybox",
                         env={"RKT_DISABLE_PLUGINS": "docker"})
    assert result.stderr == (
        'rkt: no fetcher is installed for "docker" images ("docker://busybox")\n'
    )


def test_local_files_answer_pull_policy_never(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    image: Path = aci_builder.build()
    result = rkt_env.run("--insecure-options=image", "fetch", "--pull-policy=never", image)
    assert result.returncode == 0, result.stderr
    # a URL fetched before would come from the remote cache; this one never was
    missing = rkt_env.run("fetch", "--pull-policy=never", "https://127.0.0.1:9/x.aci")
    assert missing.stderr == (
        'rkt: image "https://127.0.0.1:9/x.aci" is not in the store and --pull-policy=never\n'
    )


def test_an_image_removed_while_it_is_fetched_is_fetched_again(
    rkt_env: RktEnv, aci_builder: AciBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file fetcher finds the file imported before, then ``image rm`` or ``image
    gc`` removes that image before the core takes it: the core asks the fetcher
    again, which brings the bytes (seen in the 8-process concurrency test)."""
    from rkt_plugins import file_fetcher

    runtime, _ = _runtime(rkt_env, insecure=frozenset({"image"}))
    image = aci_builder.build()
    first = fetch_image(runtime, str(image))
    runtime.store.remove(first.id)
    real = file_fetcher._imported_before
    answers = iter([first.id])  # once: the race's stale answer, then the real lookup
    monkeypatch.setattr(file_fetcher, "_imported_before",
                        lambda *args: next(answers, None) or real(*args))
    again = fetch_image(runtime, str(image))
    assert again.id == first.id
    assert runtime.store.resolve(first.id).id == first.id
