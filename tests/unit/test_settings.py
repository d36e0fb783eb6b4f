"""Each setting is declared once (etl.config): Settings, Etl's keywords, Etl.serve/prune's defaults and the
click options are all built from the declarations, and agree with them."""

from __future__ import annotations

import dataclasses
import inspect

import click
import pytest

from etl import Etl, Settings, UsageError
from etl.cli import cli
from etl.config import (
    DBT_SETTINGS,
    JOB_SETTINGS,
    NOT_FOUND_WINDOW,
    PRUNE_SETTINGS,
    SERVE_SETTINGS,
    WORKSPACE_SETTINGS,
    Backoff,
    SettingOverrides,
    apply_overrides,
    check_base_url,
    flag_of,
)


def commands(group: click.Group = cli) -> list[click.Command]:
    found: list[click.Command] = []
    for command in group.commands.values():
        found += commands(command) if isinstance(command, click.Group) else [command]
    return found


def test_etl_takes_exactly_the_declared_job_settings_as_keywords():
    assert list(SettingOverrides.__annotations__) == [s.name for s in JOB_SETTINGS]
    keywords = set(inspect.signature(Etl.__init__).parameters) - {"self", "settings", "overrides"}
    # The rest pass through SettingOverrides.
    assert keywords == {"read_only", "transport", "engine", "clock", "workspaces"}


def test_settings_take_their_defaults_from_the_declarations():
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    for setting in JOB_SETTINGS:
        if setting is NOT_FOUND_WINDOW:
            assert Backoff().not_found_window == setting.default * 3600.0
        else:
            assert fields[setting.name] == setting.default, setting.name


def test_serve_and_prune_take_their_defaults_from_the_declarations():
    for method, declared in ((Etl.serve, SERVE_SETTINGS), (Etl.prune, PRUNE_SETTINGS),
                             (Etl.dbt_sources, DBT_SETTINGS)):
        parameters = inspect.signature(method).parameters
        for setting in declared:
            if setting.name in parameters and setting.default != ():
                assert parameters[setting.name].default == setting.default, setting.name


def test_every_option_of_a_declared_setting_is_built_from_its_declaration():
    webhooks = cli.commands["webhooks"]
    assert isinstance(webhooks, click.Group)
    seen = 0
    for command in commands():
        serve = command.name == "serve"
        extra = SERVE_SETTINGS if serve else DBT_SETTINGS if command.name == "sources" else PRUNE_SETTINGS
        declared = {s.name: s for s in (*JOB_SETTINGS, *extra, *WORKSPACE_SETTINGS)}
        for param in command.params:
            setting = declared.get(param.name or "")
            if setting is None or not isinstance(param, click.Option):
                continue
            seen += 1
            assert setting.option in param.opts, (command.name, param.name)
            if setting.name != "webhook_secrets":  # repeatable; its env var is comma-separated, read apart
                assert (param.default, param.envvar) == (setting.default, setting.env), (command.name, param.name)
            if not (setting.name == "api_version" and command in webhooks.commands.values()):  # worded apart
                assert param.help == setting.help, (command.name, param.name)
    assert seen >= 50


def test_the_library_names_the_parameter_and_the_cli_the_flag():
    with pytest.raises(UsageError) as raised:
        check_base_url("https://api.openphone.com/v1")
    assert str(raised.value).startswith("base_url 'https://api.openphone.com/v1' ends in /v1")
    assert raised.value.worded(flag_of).startswith("--base-url 'https://api.openphone.com/v1' ends in /v1")
    assert (flag_of("fetch_calls"), flag_of("webhook_secrets"), flag_of("discover_since")) == (
        "--calls", "--webhook-secret", "--discover-since")
    assert (flag_of("workspaces_file"), flag_of("workspace_names")) == ("--workspaces", "--workspace")


def test_keyword_overrides_are_checked_and_none_keeps_the_setting():
    base = Settings(rate=5.0)
    assert apply_overrides(base, {"rate": None}) is base
    changed = apply_overrides(base, {"not_found_window": 2.0, "concurrency": 3})
    assert (changed.backoff.not_found_window, changed.concurrency, changed.rate) == (7200.0, 3, 5.0)
    with pytest.raises(TypeError, match="unexpected setting keyword"):
        apply_overrides(base, {"ratee": 1.0})  # type: ignore[typeddict-unknown-key]
