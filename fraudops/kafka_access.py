"""Who may do what on the project's Kafka: one principal per kind of process, each with the
topics it may write and read, applied to a broker as SCRAM-SHA-512 users and ACLs, on the
settings' topics (created here when missing).

The broker authorises with ACLs (KRaft's StandardAuthorizer, nothing allowed without one);
`admin` is its super user (the broker itself, the dev stack, the tests' set-up). A label is
what the next model learns from, so the labels topic is writable only by the principals
that carry labels: `labels` (a label feed, the label consumer) and `stripe` (disputes and
early fraud warnings). `python -m fraudops.kafka_access` creates the topics and applies the
table with the settings' admin login and the passwords in KAFKA_<USER>_PASSWORD
(docker-compose's kafka-setup job); the dev stack calls the same functions on every `up`."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from fraudops.processes import wait_until
from fraudops.settings import Settings, load_settings

ADMIN = "admin"
# Every consumer group of the project's processes starts with this (scorer, label consumer,
# Stripe consumer, the console's live views); the console reads the scorer group's offsets.
GROUP_PREFIX = "fraudops-"
SCRAM_ITERATIONS = 8192


@dataclass(frozen=True)
class Grant:
    """Topics a principal may write, read and only describe, by settings field."""

    write: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    describe: tuple[str, ...] = ()


GRANTS = {
    "ingest": Grant(write=("topic_raw", "topic_inline_dlq")),  # the gRPC server
    "scorer": Grant(read=("topic_raw",), write=("topic_scores", "topic_dlq")),
    "labels": Grant(read=("topic_labels",), write=("topic_labels", "topic_labels_dlq")),
    "stripe": Grant(
        read=("topic_stripe_events",),
        write=(
            "topic_stripe_events",
            "topic_stripe_events_dlq",
            "topic_raw",
            "topic_labels",
            "topic_inline_dlq",
        ),  # fmt: skip
    ),
    "console": Grant(read=("topic_scores",), describe=("topic_raw",)),  # live view, lag
}
PRINCIPALS = (ADMIN, *GRANTS)


def acl_bindings(topics: dict[str, str]) -> list[Any]:
    """The ACLs of GRANTS for `topics` (settings field -> topic name), literal topic names,
    plus read on the project's consumer groups for every principal that reads."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourceType
    from confluent_kafka.admin import ResourcePatternType as Pattern

    def allow(user: str, kind: Any, name: str, pattern: Any, operation: Any) -> AclBinding:
        return AclBinding(kind, name, pattern, f"User:{user}", "*", operation,
                          AclPermissionType.ALLOW)  # fmt: skip

    bindings = []
    for user, grant in GRANTS.items():
        for operation, fields in ((AclOperation.WRITE, grant.write),
                                  (AclOperation.READ, grant.read),
                                  (AclOperation.DESCRIBE, grant.describe)):  # fmt: skip
            bindings += [
                allow(user, ResourceType.TOPIC, topics[f], Pattern.LITERAL, operation)
                for f in fields
            ]
        if grant.read:
            bindings.append(allow(user, ResourceType.GROUP, GROUP_PREFIX, Pattern.PREFIXED,
                                  AclOperation.READ))  # fmt: skip
    return bindings


def add_users(admin_settings: Settings, passwords: dict[str, str]) -> None:
    """Create or update the SCRAM credential of every principal of GRANTS (idempotent: the
    dev stack applies it on every `up`)."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(user, info, passwords[user].encode())
               for user in GRANTS]  # fmt: skip
    admin = AdminClient(admin_settings.kafka_config())
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(timeout=30)


def grant(admin_settings: Settings, topics: dict[str, str]) -> None:
    """Create the ACLs of GRANTS on `topics` (creating an existing ACL changes nothing)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_settings.kafka_config())
    bindings = acl_bindings(topics)
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)
    # The controller has them once create_acls returns; the broker authorises with them a
    # moment later, when it has applied that metadata: wait, so a first write is allowed.
    wait_until(lambda: set(bindings) <= _acls(admin), "the broker to apply the ACLs", 30)


def _acls(admin: Any) -> set[Any]:
    """Every ACL the broker authorises with."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)  # fmt: skip
    return set(admin.describe_acls(everything).result(timeout=30))


def revoke(admin_settings: Settings, topics: dict[str, str]) -> None:
    """Delete the topic ACLs `grant` created on `topics` (a deleted topic keeps its ACLs)."""
    from confluent_kafka.admin import AclBindingFilter, AdminClient

    literal = [b for b in acl_bindings(topics) if b.name in topics.values()]
    filters = [
        AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                         b.operation, b.permission_type)
        for b in literal
    ]  # fmt: skip
    admin = AdminClient(admin_settings.kafka_config())  # alive until the futures resolve
    for future in admin.delete_acls(filters).values():
        future.result(timeout=30)


def ensure_topics(admin_settings: Settings, partitions: int) -> list[str]:
    """Create the settings' topics that are missing (the broker auto-creates none); the
    names of those created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(admin_settings.kafka_config())
    existing = admin.list_topics(timeout=10).topics
    missing = [NewTopic(name, num_partitions=partitions)
               for name in admin_settings.topics().values() if name not in existing]  # fmt: skip
    created = []
    for name, future in (admin.create_topics(missing) if missing else {}).items():
        try:
            future.result(timeout=30)
            created.append(name)
        except KafkaException as err:
            if "TOPIC_ALREADY_EXISTS" not in str(err):
                raise
    return created


def password_variable(user: str) -> str:
    """Where docker-compose's set-up job finds a principal's password (.env.example)."""
    return f"KAFKA_{user.upper()}_PASSWORD"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraudops.kafka_access", description=__doc__)
    parser.add_argument("--partitions", type=int, default=3, help="of each topic created")
    args = parser.parse_args(argv)
    settings = load_settings()
    passwords = {user: os.environ.get(password_variable(user), "") for user in GRANTS}
    missing = [password_variable(user) for user, password in passwords.items() if not password]
    if settings.kafka_sasl_username != ADMIN or missing:
        print(f"need KAFKA_SASL_USERNAME={ADMIN} (and its KAFKA_SASL_PASSWORD) and "
              f"{', '.join(missing) or 'nothing else'}", file=sys.stderr)  # fmt: skip
        return 2
    for name in ensure_topics(settings, args.partitions):
        print(f"created topic {name}", file=sys.stderr)
    add_users(settings, passwords)
    grant(settings, settings.topics())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
