"""Settings: `to_environ` is the exact inverse of `load_settings`, and the topic list is
derived from the fields, so adding a topic field adds it everywhere topics are created."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from fraudops.settings import Settings, env_name, load_settings, to_environ, url_address


def _other_value(name: str, kind: str, default):
    """A valid value of `kind` that differs from `default`."""
    if "int" in kind:
        return default + 7
    if "float" in kind:
        return default * 3 + 0.125
    if "Path" in kind:
        return Path(f"/tmp/{name}-elsewhere")
    return f"{default or name}-elsewhere"


def non_default_settings() -> Settings:
    defaults = Settings()
    values = {
        f.name: _other_value(f.name, str(f.type), getattr(defaults, f.name))
        for f in fields(Settings)
    }
    return Settings(**values)


def test_every_field_is_changed_by_the_fixture():
    changed, defaults = non_default_settings(), Settings()
    assert all(getattr(changed, f.name) != getattr(defaults, f.name) for f in fields(Settings))


@pytest.mark.parametrize("settings", [Settings(), non_default_settings()], ids=["default", "all"])
def test_to_environ_is_the_inverse_of_load_settings(settings):
    environ = to_environ(settings)
    assert set(environ) == {env_name(f.name) for f in fields(Settings)}
    assert all(isinstance(v, str) for v in environ.values())
    assert load_settings(environ) == settings


@pytest.mark.parametrize("field", [f.name for f in fields(Settings)])
def test_each_field_round_trips_alone(field):
    changed = getattr(non_default_settings(), field)
    settings = replace(Settings(), **{field: changed})
    assert load_settings(to_environ(settings)) == settings


def test_unset_optional_field_overrides_an_inherited_value():
    inherited = {"DATABASE_URL": "postgresql://elsewhere/db"}
    assert load_settings({**inherited, **to_environ(Settings())}).database_url is None


def test_malformed_value_names_the_variable():
    with pytest.raises(ValueError, match="FRAUDOPS_GRPC_PORT"):
        load_settings({"FRAUDOPS_GRPC_PORT": "fifty"})


def test_topics_are_every_topic_field():
    settings = replace(Settings(), topic_raw="elsewhere.raw")
    topics = settings.topics()
    assert set(topics) == {f.name for f in fields(Settings) if f.name.startswith("topic_")}
    assert topics["topic_raw"] == "elsewhere.raw"
    assert len(set(topics.values())) == len(topics)


def test_local_services_follow_their_ports_unless_configured():
    settings = replace(Settings(), postgres_port=61000, redis_port=61001)
    local = settings.with_local_services()
    assert url_address(local.database_url) == ("127.0.0.1", 61000)
    assert url_address(local.redis_url) == ("127.0.0.1", 61001)
    configured = replace(
        settings, database_url="postgresql://db.internal/fraudops", redis_url="redis://cache:6380/1"
    )
    assert configured.with_local_services() == configured


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:15000", ("127.0.0.1", 15000)),
        ("http://localhost", ("localhost", 80)),
        ("postgresql://fraudops@db:6543/fraudops", ("db", 6543)),
    ],
)
def test_url_address(url, address):
    assert url_address(url) == address


def test_kafka_address_is_the_first_bootstrap_server():
    settings = replace(Settings(), kafka_bootstrap_servers="broker-a:19092,broker-b:19092")
    assert settings.kafka_address() == ("broker-a", 19092)


def test_kafka_config_logs_in_only_when_a_user_is_set():
    anonymous = Settings().kafka_config(**{"group.id": "g"})
    assert anonymous == {"bootstrap.servers": "127.0.0.1:9092", "group.id": "g"}
    scorer = replace(Settings(), kafka_sasl_username="scorer", kafka_sasl_password="s3cret")
    assert scorer.kafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "scorer", "sasl.password": "s3cret",
    }  # fmt: skip
    assert "s3cret" not in repr(scorer)  # settings may be logged; the password never is
    assert replace(Settings(), **scorer.kafka_login()).kafka_config() == scorer.kafka_config()
