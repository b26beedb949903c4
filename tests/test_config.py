"""plugins.toml: validation with precise messages, environment overrides, switching plugins off."""
from __future__ import annotations

import pytest

from hookgate import PluginConfig
from hookgate.config import ConfigError, load_config


def error_of(make_config, toml: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        make_config(toml)
    return caught.value


def test_not_toml(make_config):
    error = error_of(make_config, "[gateway\npipeline = ")
    assert "plugins.toml" in str(error) and "not valid TOML" in str(error)


def test_unknown_plugin_in_the_pipeline(make_config):
    error = error_of(make_config, '[gateway]\npipeline = ["echo", "no_such_plugin"]')
    assert (error.section, error.key) == ("gateway", "pipeline")
    assert "'no_such_plugin'" in error.reason and "installed:" in error.reason and "echo" in error.reason


def test_unknown_plugin_section(make_config):
    error = error_of(make_config, '[gateway]\npipeline = ["echo"]\n[plugins.memory_cahce]\nttl_seconds = 5')
    assert error.section == "plugins.memory_cahce"
    assert "unknown plugin" in error.reason


def test_unknown_key_names_section_key_and_allowed_keys(make_config):
    error = error_of(make_config, '[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nttl = 5')
    assert (error.section, error.key) == ("plugins.memory_cache", "ttl")
    assert "unknown key" in error.reason and "ttl_seconds" in error.reason
    assert str(error).startswith(str(error.source) + ": [plugins.memory_cache] ttl: unknown key")


def test_ill_typed_key(make_config):
    error = error_of(make_config, '[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nmax_entries = "lots"')
    assert (error.section, error.key) == ("plugins.memory_cache", "max_entries")
    assert "integer" in error.reason and "'lots'" in error.reason


def test_out_of_bounds_value(make_config):
    error = error_of(make_config, '[gateway]\npipeline = ["echo"]\nport = 70000')
    assert (error.section, error.key) == ("gateway", "port")


def test_unknown_gateway_key_and_unknown_section(make_config):
    assert error_of(make_config, "[gateway]\nworkers = 4").key == "workers"
    assert error_of(make_config, "[gatway]\n").section == "gatway"


def test_a_duplicate_in_the_pipeline(make_config):
    assert "listed twice" in error_of(make_config, '[gateway]\npipeline = ["echo", "echo"]').reason


def test_a_secret_value_is_never_echoed_in_an_error(make_config):
    error = error_of(make_config, '[gateway]\npipeline = ["openai"]\n[plugins.openai]\napi_key = 12345678')
    assert error.key == "api_key" and "12345678" not in str(error)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_environment_overrides_the_file(make_config, monkeypatch):
    monkeypatch.setenv("HOOKGATE_PORT", "9123")
    monkeypatch.setenv("HOOKGATE_MEMORY_CACHE__TTL_SECONDS", "42")
    monkeypatch.setenv("HOOKGATE_PIPELINE", '["memory_cache", "echo"]')
    config = make_config('[gateway]\nport = 8000\npipeline = ["echo"]\n[plugins.memory_cache]\nttl_seconds = 5')
    assert config.gateway.port == 9123
    assert config.pipeline == ("memory_cache", "echo")
    assert config.plugins[0].config.ttl_seconds == 42


def test_a_bad_environment_value_is_reported_like_a_file_value(make_config, monkeypatch):
    monkeypatch.setenv("HOOKGATE_MEMORY_CACHE__MAX_ENTRIES", "many")
    error = error_of(make_config, '[gateway]\npipeline = ["memory_cache", "echo"]')
    assert error.variable == "HOOKGATE_MEMORY_CACHE__MAX_ENTRIES", "the variable is named, not plugins.toml"
    assert str(error).startswith("environment variable HOOKGATE_MEMORY_CACHE__MAX_ENTRIES: ") and "'many'" in str(error)


def test_enabled_false_switches_a_plugin_off(make_config, monkeypatch):
    config = make_config('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nenabled = false')
    assert config.pipeline == ("echo",) and config.disabled == ("memory_cache",)
    monkeypatch.setenv("HOOKGATE_MEMORY_CACHE__ENABLED", "true")
    assert make_config('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nenabled = false').pipeline == ("memory_cache", "echo")


def test_command_line_overrides_win(make_config, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[gateway]\npipeline = ["echo"]\nport = 8000\n')
    assert load_config(path, overrides={"port": 9999, "host": None}).gateway.port == 9999


def test_built_in_defaults_need_no_file_no_key_and_no_redis():
    config = load_config(None)
    assert config.pipeline == ("request_log", "memory_cache", "echo")
    assert (config.gateway.host, config.gateway.port) == ("127.0.0.1", 8080)


def test_plugin_config_base_forbids_extras():
    class Mine(PluginConfig):
        size: int = 1

    with pytest.raises(Exception):
        Mine(sise=2)
