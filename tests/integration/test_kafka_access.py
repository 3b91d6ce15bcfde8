"""The broker authenticates every client and its ACLs decide who writes what, on the real
broker the tests share: a client without credentials, or with a wrong password, writes
nothing; a principal without the grant gets TOPIC_AUTHORIZATION_FAILED; the principals of
`fraudops.kafka_access` write what the table says. Fresh topics get the table's ACLs, the
same ones the dev stack gives the real topics (checked against the real labels topic)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from confluent_kafka import KafkaError, Producer

from devstack import Stack
from fraudops import kafka_access
from fraudops.settings import Settings, load_settings
from tests.helpers.serving_env import consume, on_topic, wait_until

DELIVERY_TIMEOUT_MS = 10_000


@pytest.fixture
def topics(kafka_settings: Settings, kafka_topics) -> Iterator[dict[str, str]]:
    """Fresh topics with the dev stack's grants on them; the grants go with the topics."""
    names = kafka_topics()
    kafka_access.grant(kafka_settings, names)
    yield names
    kafka_access.revoke(kafka_settings, names)


def login(kafka_settings: Settings, user: str | None, password: str | None = None) -> Settings:
    """The tests' broker as `user` with the dev stack's password for it (or `password`)."""
    passwords = Stack(load_settings()).kafka_passwords()
    if user is not None and password is None:
        assert user in passwords, f"no password for {user} in the dev stack's run/kafka"
        password = passwords[user]
    return replace(kafka_settings, kafka_sasl_username=user, kafka_sasl_password=password)


def send(settings: Settings, topic: str) -> tuple[bytes, KafkaError | None, list[KafkaError]]:
    """Produce one message: its value, the delivery report's error (None: written) and the
    errors the client reported meanwhile (authentication, connection)."""
    value = f"probe-{uuid.uuid4().hex}".encode()
    outcome: list[KafkaError | None] = []
    errors: list[KafkaError] = []
    config = settings.kafka_config(**{
        "message.timeout.ms": DELIVERY_TIMEOUT_MS, "log_level": 0, "error_cb": errors.append,
    })  # fmt: skip
    producer = Producer(config)
    producer.produce(topic, value=value, on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 10)
    assert outcome, "no delivery report"
    return value, outcome[0], errors


def holds(kafka_settings: Settings, topic: str, value: bytes) -> bool:
    return value in {m.value() for m in consume(kafka_settings, topic, 1, timeout=30)}


def written(kafka_settings: Settings, topic: str) -> int:
    """Messages ever written to a (fresh) topic."""
    counted = wait_until(lambda: (n := on_topic(kafka_settings, topic)) is not None and [n],
                         f"the watermarks of {topic}", 30)  # fmt: skip
    return counted[0]


@pytest.mark.parametrize("field", ["topic_labels", "topic_raw"])
@pytest.mark.parametrize("credentials", ["none", "wrong password"])
def test_a_client_that_does_not_authenticate_writes_nothing(
    kafka_settings, topics, field, credentials
):
    if credentials == "none":
        anonymous = login(kafka_settings, None)
    else:
        anonymous = login(kafka_settings, "labels", password="not-the-password")
    _, err, errors = send(anonymous, topics[field])
    assert err is not None
    if credentials == "wrong password":
        assert KafkaError._AUTHENTICATION in {e.code() for e in errors}, errors
    assert written(kafka_settings, topics[field]) == 0


@pytest.mark.parametrize(
    ("user", "field"),
    [("scorer", "topic_labels"), ("ingest", "topic_labels"), ("console", "topic_labels"),
     ("scorer", "topic_raw"), ("labels", "topic_raw"), ("ingest", "topic_stripe_events")],
)  # fmt: skip
def test_a_principal_without_the_grant_is_refused(kafka_settings, topics, user, field):
    _, err, _ = send(login(kafka_settings, user), topics[field])
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert written(kafka_settings, topics[field]) == 0


@pytest.mark.parametrize(
    ("user", "field"),
    [("labels", "topic_labels"), ("stripe", "topic_labels"), ("ingest", "topic_raw"),
     ("stripe", "topic_raw"), ("scorer", "topic_scores"), ("stripe", "topic_stripe_events")],
)  # fmt: skip
def test_a_principal_with_the_grant_writes(kafka_settings, topics, user, field):
    value, err, _ = send(login(kafka_settings, user), topics[field])
    assert err is None
    assert holds(kafka_settings, topics[field], value)


def test_the_dev_stack_grants_the_real_labels_topic_to_the_label_writers_only(kafka_settings):
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    topic = Settings().topic_labels
    query = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.MATCH, None, None,
                             AclOperation.WRITE, AclPermissionType.ALLOW)  # fmt: skip
    admin = AdminClient(kafka_settings.kafka_config())  # alive until the future resolves
    found = admin.describe_acls(query).result(timeout=30)
    writers = {b.principal for b in found}
    assert writers == {"User:labels", "User:stripe"}
