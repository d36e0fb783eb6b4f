"""Where `etl serve` takes each workspace's deliveries (issue 27): ``/webhooks/<name>``, and today's
``/webhooks/openphone`` for the ``default`` workspace, a name no workspace may therefore take."""

from __future__ import annotations

import pytest

from etl.errors import UsageError
from etl.webhooks.app import receiver_paths, workspace_of_path
from etl.workspaces import check_name, parse_workspaces


def test_each_workspace_has_its_path_and_default_also_todays() -> None:
    assert receiver_paths("default") == ("/webhooks/openphone", "/webhooks/default")
    assert receiver_paths("north") == ("/webhooks/north",)
    assert [workspace_of_path(s) for s in ("openphone", "default", "north", "east")] == [
        "default", "default", "north", "east"]


def test_openphone_is_no_workspace_name() -> None:
    with pytest.raises(UsageError) as refused:
        parse_workspaces('[workspace.openphone]\napi_key_env = "K"\n', "ws.toml")
    assert str(refused.value) == ("ws.toml: [workspace.openphone]: the name is reserved: /webhooks/openphone is "
                                  "the default workspace's receiver path")
    with pytest.raises(UsageError) as refused:
        check_name("openphone")
    assert str(refused.value) == ("workspace name 'openphone' is reserved: /webhooks/openphone is the default "
                                  "workspace's receiver path")
    assert check_name("OpenPhone") == "OpenPhone"  # paths are case-sensitive: another path, another name
