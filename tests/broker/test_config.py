from pathlib import Path

import pytest
from click.testing import CliRunner

from broker import config as cfg
from broker.cli import broker_command


def test_defaults():
    c = cfg.load({}, environ={})
    assert (c.host, c.port, c.data_dir) == ("127.0.0.1", 9092, Path("ferry-data"))
    assert c.auto_create_topics is True and c.default_partitions == 1


def test_precedence_file_env_flag(tmp_path):
    f = tmp_path / "ferry.toml"
    f.write_text('port = 1111\ndata_dir = "from-file"\ndefault_partitions = 3\nauto_create_topics = false\n')
    env = {"FERRY_PORT": "2222", "FERRY_DEFAULT_PARTITIONS": "5"}
    c = cfg.load({"port": 3333}, config_file=f, environ=env)
    assert c.port == 3333                       # flag beats env and file
    assert c.default_partitions == 5            # env beats file
    assert c.data_dir == Path("from-file")      # file beats default
    assert c.auto_create_topics is False


def test_config_file_from_environment(tmp_path):
    f = tmp_path / "b.toml"
    f.write_text("port = 4444\n")
    assert cfg.load({}, environ={"FERRY_CONFIG": str(f)}).port == 4444


@pytest.mark.parametrize("bad", [
    {"FERRY_PORT": "ninety"},
    {"FERRY_AUTO_CREATE_TOPICS": "maybe"},
    {"FERRY_PORT": "70000"},
    {"FERRY_LOG_LEVEL": "LOUD"},
])
def test_bad_env_values(bad):
    with pytest.raises(cfg.ConfigError):
        cfg.load({}, environ=bad)


def test_unknown_file_key_is_an_error(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("prot = 1\n")
    with pytest.raises(cfg.ConfigError, match="prot"):
        cfg.load({}, config_file=f, environ={})


def test_every_field_has_a_flag():
    names = {p.name for p in broker_command.params}
    assert set(cfg.FIELDS) <= names


def test_cli_reports_bad_config_without_traceback(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("port = [1]\n")
    result = CliRunner().invoke(broker_command, ["--config", str(f)])
    assert result.exit_code == 2
    assert "invalid value" in result.output
    assert "Traceback" not in result.output
