"""Each setting is declared once (etl.config): Settings, Etl's keywords, Etl.serve/prune's defaults and the
click options are all built from the declarations, and agree with them."""

from __future__ import annotations

import dataclasses
import inspect

import click
import pytest

from etl import Etl, HealthLimits, Settings, UsageError
from etl import config as config_module
from etl.cli import cli
from etl.config import (
    ALL_SETTINGS,
    DBT_SETTINGS,
    JOB_SETTINGS,
    NOT_FOUND_WINDOW,
    PRUNE_SETTINGS,
    SERVE_SETTINGS,
    STATUS_SETTINGS,
    UPGRADE_SETTINGS,
    WEBHOOK_SETTINGS,
    WORKSPACE_SETTINGS,
    Backoff,
    Setting,
    SettingOverrides,
    apply_overrides,
    check_base_url,
    flag_of,
)
from etl.job import Webhooks
from etl.webhooks import manage

# The settings of each command beyond the job's and the workspace options (by the command's name).
COMMAND_SETTINGS = {"serve": SERVE_SETTINGS, "sources": DBT_SETTINGS, "prune": PRUNE_SETTINGS,
                    "status": STATUS_SETTINGS, "register": WEBHOOK_SETTINGS, "migrate": WEBHOOK_SETTINGS,
                    "upgrade": UPGRADE_SETTINGS}
# The CLI's own options with a default (docs/architecture.md "Settings": not library settings).
CLI_ONLY = {"log_level", "log_format"}


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


def test_the_library_takes_its_keyword_defaults_from_the_declarations():
    checked = 0
    for method, declared in ((Etl.serve, SERVE_SETTINGS), (Etl.prune, PRUNE_SETTINGS),
                             (Etl.dbt_sources, DBT_SETTINGS), (HealthLimits, STATUS_SETTINGS),
                             (Webhooks.register, (WEBHOOK_SETTINGS[0],)), (Webhooks.migrate, WEBHOOK_SETTINGS),
                             (manage.migrate, WEBHOOK_SETTINGS[1:]), (Etl.upgrade, UPGRADE_SETTINGS)):
        parameters = inspect.signature(method).parameters
        for setting in declared:
            if setting.default == ():
                continue
            assert setting.name in parameters, (method, setting.name)
            assert parameters[setting.name].default == setting.default, (method, setting.name)
            checked += 1
    assert checked == 20


def test_each_setting_is_declared_once():
    """One declaration a setting: every Setting of etl.config is in exactly one table, under its own name
    and flag, so a second declaration of the same setting (another default beside the first) cannot hide."""
    module_settings = [v for v in vars(config_module).values() if isinstance(v, Setting)]
    assert sorted(s.name for s in module_settings) == sorted(s.name for s in ALL_SETTINGS)
    assert len({id(s) for s in ALL_SETTINGS}) == len(ALL_SETTINGS)
    assert len({s.name for s in ALL_SETTINGS}) == len(ALL_SETTINGS)
    assert len({s.option for s in ALL_SETTINGS}) == len(ALL_SETTINGS)


def test_every_option_with_a_default_is_built_from_a_declaration():
    """An option with a default of its own is a setting: written by hand beside (or instead of) a
    declaration, its default would be a second one, free to drift from the library's (issue: `--wait`
    120 s on the CLI, 60 s in `Etl.webhooks.migrate`)."""
    declared_names = {s.name for s in ALL_SETTINGS}
    for command in commands():
        declared = {s.name for s in (*JOB_SETTINGS, *COMMAND_SETTINGS.get(command.name or "", ()),
                                     *WORKSPACE_SETTINGS)}
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in CLI_ONLY:
                continue
            name = param.name or ""
            if name in declared_names:
                assert name in declared, (command.name, name)  # its command's table lists it
                continue
            # Not a setting: a switch or a value with no default (--limit, --dry-run, --since, --url, …).
            assert param.is_flag or param.default in (None, click.core.UNSET) or param.required, (
                command.name, name, param.default)


def test_every_option_of_a_declared_setting_is_built_from_its_declaration():
    webhooks = cli.commands["webhooks"]
    assert isinstance(webhooks, click.Group)
    seen = 0
    for command in commands():
        extra = COMMAND_SETTINGS.get(command.name or "", ())
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
    assert seen >= 95


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
