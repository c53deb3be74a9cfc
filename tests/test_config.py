"""Settings: defaults, PYROSTORE_* parsing, precedence, validation, dump round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from pyrostore.config import DEFAULT_INVENTORY, Settings
from pyrostore.errors import ConfigError


def test_defaults() -> None:
    settings = Settings()
    assert settings.ns_host == "127.0.0.1"
    assert settings.ns_port == 9090
    assert settings.host == "127.0.0.1"
    assert settings.data_dir == Path("pyrostore-data")
    assert settings.inventory == DEFAULT_INVENTORY
    assert settings.inventory.is_file()
    assert settings.serializer == "msgpack"
    assert settings.call_timeout == 5.0
    assert settings.refresh_interval == 3.0
    assert settings.failover_timeout == 10.0
    assert (settings.heartbeat_interval, settings.lease) == (0.25, 1.0)
    assert settings.test_hooks is False
    assert settings.log_level == "INFO"


def test_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env(environ={}) == Settings()


def test_environment_values_are_parsed_to_the_field_types() -> None:
    settings = Settings.from_env(
        environ={
            "PYROSTORE_NS_HOST": "10.0.0.7",
            "PYROSTORE_NS_PORT": "9999",
            "PYROSTORE_HOST": "::1",
            "PYROSTORE_DATA_DIR": "/srv/store",
            "PYROSTORE_INVENTORY": "books.csv",
            "PYROSTORE_SERIALIZER": "json",
            "PYROSTORE_CALL_TIMEOUT": "0.25",
            "PYROSTORE_REFRESH_INTERVAL": "7",
            "PYROSTORE_LEASE": "2",
            "PYROSTORE_TEST_HOOKS": "yes",
            "PYROSTORE_LOG_LEVEL": "debug",
        }
    )
    assert settings.ns_host == "10.0.0.7"
    assert settings.ns_port == 9999 and type(settings.ns_port) is int
    assert settings.host == "::1"
    assert settings.data_dir == Path("/srv/store")
    assert settings.inventory == Path("books.csv")
    assert settings.serializer == "json"
    assert settings.call_timeout == 0.25 and type(settings.call_timeout) is float
    assert settings.refresh_interval == 7.0 and type(settings.refresh_interval) is float
    assert settings.lease == 2.0 and type(settings.lease) is float
    assert settings.test_hooks is True
    assert settings.log_level == "DEBUG"


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYROSTORE_NS_PORT", "9191")
    monkeypatch.delenv("PYROSTORE_SERIALIZER", raising=False)
    settings = Settings.from_env()
    assert settings.ns_port == 9191
    assert settings.serializer == "msgpack"


def test_overrides_beat_the_environment() -> None:
    environ = {"PYROSTORE_NS_PORT": "9999", "PYROSTORE_SERIALIZER": "json"}
    settings = Settings.from_env(environ=environ, ns_port=7000)
    assert settings.ns_port == 7000
    assert settings.serializer == "json"


def test_none_overrides_are_ignored() -> None:
    environ = {"PYROSTORE_NS_PORT": "9999"}
    settings = Settings.from_env(environ=environ, ns_port=None, serializer=None)
    assert settings.ns_port == 9999
    assert settings.serializer == "msgpack"


def test_data_dir_and_inventory_are_paths_even_when_given_as_text(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), inventory=str(tmp_path / "b.csv"))  # type: ignore[arg-type]
    assert settings.data_dir == tmp_path
    assert isinstance(settings.inventory, Path)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ns_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ns_port": 0}, "ns_port must be 1..65535, not 0"),
        ({"ns_port": 65536}, "ns_port must be 1..65535, not 65536"),
        ({"ns_port": -5}, "ns_port must be 1..65535, not -5"),
        ({"serializer": "pickle"}, "serializer must be one of serpent, msgpack, json"),
        ({"call_timeout": -1.0}, "call_timeout must be > 0 seconds, not -1.0"),
        ({"call_timeout": 0.0}, "call_timeout must be > 0 seconds"),
        ({"refresh_interval": -0.5}, "refresh_interval must be > 0 seconds"),
        ({"lease": 0.2}, "lease (0.2 s) must be at least 3 x heartbeat_interval"),
        ({"failover_timeout": 1.0}, "failover_timeout (1.0 s) must be more than the lease"),
        ({"heartbeat_interval": 0.0}, "heartbeat_interval must be > 0 seconds"),
        ({"log_level": "TRACE"}, "log_level must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"host": "example.com"}, "host must be an IP address or 'localhost', not 'example.com'"),
        ({"ns_host": "300.1.1.1"}, "ns_host must be an IP address or 'localhost'"),
        ({"host": ""}, "host must be an IP address"),
    ],
)
def test_invalid_overrides_raise_config_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ={}, **overrides)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("PYROSTORE_NS_PORT", "abc", "PYROSTORE_NS_PORT='abc' is not a valid int"),
        ("PYROSTORE_NS_PORT", "90.5", "PYROSTORE_NS_PORT='90.5' is not a valid int"),
        ("PYROSTORE_NS_PORT", "", "PYROSTORE_NS_PORT='' is not a valid int"),
        ("PYROSTORE_TEST_HOOKS", "maybe", "is not 1/0/true/false"),
        ("PYROSTORE_CALL_TIMEOUT", "fast", "PYROSTORE_CALL_TIMEOUT='fast' is not a valid float"),
        ("PYROSTORE_CALL_TIMEOUT", "-2", "call_timeout must be > 0 seconds, not -2.0"),
        ("PYROSTORE_CALL_TIMEOUT", "nan", "call_timeout must be > 0 seconds"),
        ("PYROSTORE_NS_PORT", "70000", "ns_port must be 1..65535, not 70000"),
        ("PYROSTORE_SERIALIZER", "pickle", "serializer must be one of"),
        ("PYROSTORE_LOG_LEVEL", "verbose", "log_level must be one of"),
        ("PYROSTORE_HOST", "my-laptop", "host must be an IP address or 'localhost'"),
    ],
)
def test_invalid_environment_values_raise_config_error(
    variable: str, raw: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ={variable: raw})
    assert message in str(caught.value)


def test_unknown_override_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting\(s\): nsport, timeout"):
        Settings.from_env(environ={}, nsport=9090, timeout=1.0)


def test_localhost_and_ipv6_addresses_are_accepted() -> None:
    settings = Settings.from_env(environ={}, ns_host="localhost", host="::1")
    assert settings.ns_host == "localhost"
    assert settings.host == "::1"


def test_replace_validates_and_leaves_the_original_alone() -> None:
    settings = Settings()
    changed = settings.replace(ns_port=9191)
    assert changed.ns_port == 9191
    assert settings.ns_port == 9090
    with pytest.raises(ConfigError, match="ns_port"):
        settings.replace(ns_port=0)


def test_dump_names_every_setting_as_text() -> None:
    dumped = Settings().dump()
    names = {f"PYROSTORE_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    assert set(dumped) == names
    assert all(isinstance(value, str) for value in dumped.values())
    assert dumped["PYROSTORE_NS_PORT"] == "9090"
    assert dumped["PYROSTORE_LOG_LEVEL"] == "INFO"


def test_dump_round_trips_through_from_env(tmp_path: Path) -> None:
    settings = Settings.from_env(
        environ={},
        ns_host="::1",
        ns_port=12345,
        host="localhost",
        data_dir=tmp_path / "data",
        inventory=tmp_path / "books.csv",
        serializer="json",
        call_timeout=0.125,
        refresh_interval=2.5,
        lease=0.5,
        heartbeat_interval=0.125,
        coordinators="127.0.0.1:7001:7101,127.0.0.1:7002:7102",
        test_hooks=True,
        log_level="WARNING",
    )
    assert Settings.from_env(environ=settings.dump()) == settings
    assert Settings.from_env(environ=Settings().dump()) == Settings()


def test_database_path(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_path("catalog", 2) == tmp_path / "catalog-2.sqlite3"
    assert settings.database_path("order", 1) == tmp_path / "order-1.sqlite3"
    assert Settings().database_path("order", 3) == Path("pyrostore-data/order-3.sqlite3")


@pytest.mark.parametrize(
    ("name", "value", "expected_type"),
    [
        ("ns_port", "9090", int),
        ("call_timeout", "5", float),
        ("ns_port", 2.5, int),
        ("test_hooks", "yes", bool),
    ],
)
def test_wrongly_typed_values_are_refused_or_converted(
    name: str, value: Any, expected_type: type
) -> None:
    try:
        settings = Settings.from_env(environ={}, **{name: value})
    except ConfigError:
        return
    assert isinstance(getattr(settings, name), expected_type)


@pytest.mark.parametrize("bad", ["127.0.0.1:7001", "127.0.0.1:x:7101", "nohost:1:2",
                                 "127.0.0.1:0:7101", "127.0.0.1:7001:70000"])
def test_bad_coordinator_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="coordinators"):
        Settings.from_env(environ={}, coordinators=bad)


def test_coordinator_addresses_in_id_order() -> None:
    settings = Settings.from_env(environ={}, coordinators="127.0.0.1:7001:7101, ::1:7002:7102")
    first, second = settings.coordinator_addresses()
    assert first.uri(1) == "PYRO:pyrostore.coordinator.1@127.0.0.1:7001"
    assert (second.host, second.port, second.raft_port) == ("::1", 7002, 7102)
    assert second.uri(2) == "PYRO:pyrostore.coordinator.2@[::1]:7002"


def test_a_new_coordinator_group_never_gets_one_port_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each port is free when chosen, and none is bound until the coordinators start: the same
    free port may come up twice, and must not be given twice (a Raft port on a Pyro5 one)."""
    from pyrostore import launcher

    offered = iter([23993, 22910, 23993, 9999, 23993, 30501, 22483, 27242, 31000])
    monkeypatch.setattr(launcher, "fixed_port", lambda host: next(offered))
    settings = Settings.from_env(environ={}, data_dir=tmp_path, ns_port=9999)
    addresses = Settings.from_env(environ={}, coordinators=launcher.coordinator_addresses(
        settings, 3)).coordinator_addresses()
    ports = [port for a in addresses for port in (a.port, a.raft_port)]
    assert ports == [23993, 22910, 30501, 22483, 27242, 31000]
