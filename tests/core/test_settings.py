"""Settings through `load_settings`: sources and their precedence, the seed's variables, and one-line errors.

The same rules through the real `gopherq` command are in tests/cli/test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gopherq import ConfigError, load_settings
from gopherq.core.plugins import load_plugins
from tests.support.common import REPO, write_config


def one_line_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        settings = load_settings(*args, **kwargs)  # type: ignore[arg-type]
        load_plugins(settings)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_without_a_file_mean_embedded_redis_and_the_seed_queue() -> None:
    settings = load_settings(None, environ={})
    assert settings.redis.embedded
    assert settings.queue.name == "my_tasks_queue"
    assert settings.worker.concurrency == 50
    assert settings.config_path is None


def test_shipped_config_loads_and_equals_the_documented_defaults() -> None:
    settings = load_settings(REPO / "gopherq.toml", environ={})
    load_plugins(settings)
    assert settings.redis.embedded
    assert settings.data_dir == (REPO / ".gopherq").resolve()
    assert settings.queue.result_ttl == 86400
    assert settings.plugin("http").body_limit == 65536
    assert settings.plugin("logging").format == "text"


def test_precedence_flags_over_env_over_seed_vars_over_file_over_defaults(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[worker]\nconcurrency = 4\n")
    env = {"NUM_WORKERS": "5", "GOPHERQ_WORKER__CONCURRENCY": "6"}
    flags = {"worker": {"concurrency": 7}}

    assert load_settings(None, environ={}).worker.concurrency == 50
    assert load_settings(config, environ={}).worker.concurrency == 4
    assert load_settings(config, environ={"NUM_WORKERS": "5"}).worker.concurrency == 5
    assert load_settings(config, environ=env).worker.concurrency == 6
    assert load_settings(config, flags, environ=env).worker.concurrency == 7


def test_sources_merge_key_by_key_within_a_table(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[worker]\ntask_timeout = 9.5\nconcurrency = 4\n[queue]\nname = 'fromfile'\n")
    settings = load_settings(config, {"worker": {"batch_size": 3}}, environ={"GOPHERQ_WORKER__SHUTDOWN_TIMEOUT": "2"})
    assert settings.worker.task_timeout == 9.5  # file
    assert settings.worker.concurrency == 4  # file
    assert settings.worker.shutdown_timeout == 2.0  # environment
    assert settings.worker.batch_size == 3  # flag
    assert settings.queue.name == "fromfile"


def test_environ_argument_is_the_only_environment_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPHERQ_WORKER__CONCURRENCY", "3")
    monkeypatch.setenv("NUM_WORKERS", "2")
    assert load_settings(None, environ={}).worker.concurrency == 50
    assert load_settings(None).worker.concurrency == 3  # default: os.environ


def test_seed_variables_land_in_their_settings() -> None:
    env = {
        "REDIS_ADDRESS": "127.0.0.1:6390",
        "REDIS_PASSWORD": "hunter2",
        "REDIS_DB": "4",
        "QUEUE_NAME": "seed_queue",
        "NUM_WORKERS": "12",
    }
    settings = load_settings(None, environ=env)
    assert settings.redis.address == "127.0.0.1:6390"
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "hunter2"
    assert settings.redis.db == 4
    assert not settings.redis.embedded
    assert settings.queue.name == "seed_queue"
    assert settings.worker.concurrency == 12


def test_gopherq_variables_override_the_seed_variables_they_shadow() -> None:
    env = {"QUEUE_NAME": "seed", "GOPHERQ_QUEUE__NAME": "prefixed", "REDIS_DB": "1", "GOPHERQ_REDIS__DB": "2"}
    settings = load_settings(None, environ=env)
    assert settings.queue.name == "prefixed"
    assert settings.redis.db == 2


def test_plugin_tables_come_from_file_and_environment(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[plugins.http]\nbody_limit = 100\nuser_agent = 'file'\n")
    settings = load_settings(config, environ={"GOPHERQ_PLUGINS__HTTP__BODY_LIMIT": "200"})
    load_plugins(settings)
    assert settings.plugin("http").body_limit == 200
    assert settings.plugin("http").user_agent == "file"


def test_relative_data_dir_resolves_next_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    config = write_config(tmp_path / "sub", "[redis]\ndata_dir = 'state'\n")
    assert load_settings(config, environ={}).data_dir == (tmp_path / "sub" / "state").resolve()


def test_secrets_are_masked_in_the_effective_settings() -> None:
    env = {"REDIS_PASSWORD": "hunter2", "GOPHERQ_REDIS__URL": "redis://user:s3cret@127.0.0.1:6379/0"}
    settings = load_settings(None, environ=env)
    shown = settings.redacted()
    assert shown["redis"]["password"] == "**********"
    assert shown["redis"]["url"] == "redis://user:**********@127.0.0.1:6379/0"
    assert "hunter2" not in repr(shown) and "s3cret" not in repr(shown)
    assert "hunter2" not in repr(settings)


# -- errors: one line naming the key and where the value came from ---------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    message = one_line_error(tmp_path / "nope.toml", environ={})
    assert message == f"{tmp_path / 'nope.toml'}: config file not found"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[worker\nconcurrency = 3\n")
    message = one_line_error(config, environ={})
    assert message.startswith(f"{config}: invalid TOML")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[worker]\nconcurency = 3\n", "worker.concurency: unknown key (did you mean 'worker.concurrency'?)"),
        ("[redis]\nadress = '127.0.0.1:1'\n", "redis.adress: unknown key (did you mean 'redis.address'?)"),
        ("[wroker]\nconcurrency = 3\n", "wroker: unknown key (did you mean 'worker'?)"),
        ("[queue]\nxyzzy = 1\n", "queue.xyzzy: unknown key"),
    ],
)
def test_unknown_key_in_file_suggests_the_closest_valid_one(tmp_path: Path, text: str, expected: str) -> None:
    config = write_config(tmp_path, text)
    assert one_line_error(config, environ={}) == f"{config}: {expected}"


def test_unknown_key_in_a_plugin_table(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[plugins.http]\nbody_limt = 3\n")
    message = one_line_error(config, environ={})
    assert message == f"{config}: plugins.http.body_limt: unknown key (did you mean 'plugins.http.body_limit'?)"


def test_unknown_plugin_table(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[plugins.htp]\nbody_limit = 3\n")
    message = one_line_error(config, environ={})
    assert message.startswith(f"{config}: plugins.htp: ")
    assert "did you mean 'plugins.http'?" in message


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("[worker]\nconcurrency = 'many'\n", "worker.concurrency", "'many'"),
        ("[worker]\nconcurrency = 0\n", "worker.concurrency", "0"),
        ("[queue]\nname = 'has space'\n", "queue.name", "'has space'"),
        ("[logging]\nlevel = 'LOUD'\n", "logging.level", "'LOUD'"),
        ("[plugins.http]\nbody_limit = 'big'\n", "plugins.http.body_limit", "'big'"),
    ],
)
def test_wrong_value_in_file_names_key_file_and_value(tmp_path: Path, text: str, key: str, shown: str) -> None:
    config = write_config(tmp_path, text)
    message = one_line_error(config, environ={})
    assert message.startswith(f"{config}: {key}: ")
    assert f"(got {shown})" in message


def test_wrong_value_in_a_gopherq_variable_names_the_variable(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[worker]\nconcurrency = 4\n")
    message = one_line_error(config, environ={"GOPHERQ_WORKER__CONCURRENCY": "lots"})
    assert message.startswith("environment variable GOPHERQ_WORKER__CONCURRENCY: worker.concurrency: ")


def test_wrong_value_in_a_seed_variable_names_the_variable() -> None:
    message = one_line_error(None, environ={"NUM_WORKERS": "x"})
    assert message.startswith("environment variable NUM_WORKERS: worker.concurrency: ")
    message = one_line_error(None, environ={"REDIS_DB": "-1"})
    assert message.startswith("environment variable REDIS_DB: redis.db: ")


def test_unknown_key_in_a_gopherq_variable_suggests_the_closest() -> None:
    message = one_line_error(None, environ={"GOPHERQ_WORKER__CONCURENCY": "3"})
    assert message == (
        "environment variable GOPHERQ_WORKER__CONCURENCY: worker.concurency: unknown key "
        "(did you mean 'worker.concurrency'?)"
    )


def test_wrong_value_in_a_flag_names_the_command_line() -> None:
    message = one_line_error(None, {"worker": {"concurrency": -3}}, environ={})
    assert message.startswith("command line: worker.concurrency: ")
