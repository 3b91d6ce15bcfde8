"""Who may do what on the project's Kafka: one principal per kind of process, each with the
topics it may write and read, applied to a broker as SCRAM-SHA-512 users and ACLs.

The broker authorises with ACLs (KRaft's StandardAuthorizer, nothing allowed without one);
`admin` is its super user (the broker itself, the dev stack, the tests' set-up). A label is
what the next model learns from, so the labels topic is writable only by the principals
that carry labels: `labels` (a label feed, the label consumer) and `stripe` (disputes and
early fraud warnings). `python -m fraudops.kafka_access` applies the table with the admin
login of the settings (docker-compose's kafka-access job; the dev stack calls `apply`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        write=("topic_stripe_events", "topic_raw", "topic_labels", "topic_inline_dlq"),
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


def apply(admin_settings: Settings, passwords: dict[str, str], topics: dict[str, str]) -> None:
    """Create or update every principal's SCRAM credential and its ACLs on `topics`; both
    are idempotent, so every `up` applies the table as it is now."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(admin_settings.kafka_config())
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(user, info, passwords[user].encode())
               for user in GRANTS]  # fmt: skip
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(timeout=30)
    for future in admin.create_acls(acl_bindings(topics)).values():
        future.result(timeout=30)


def revoke(admin_settings: Settings, topics: dict[str, str]) -> None:
    """Delete the ACLs `apply` created for `topics` (topics deleted by a test leave theirs)."""
    from confluent_kafka.admin import AclBindingFilter, AdminClient

    literal = [b for b in acl_bindings(topics) if b.name in topics.values()]
    filters = [
        AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                         b.operation, b.permission_type)
        for b in literal
    ]  # fmt: skip
    for future in AdminClient(admin_settings.kafka_config()).delete_acls(filters).values():
        future.result(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraudops.kafka_access", description=__doc__)
    parser.add_argument("passwords", type=Path, help="JSON file: principal -> password")
    args = parser.parse_args(argv)
    settings = load_settings()
    passwords = json.loads(args.passwords.read_text())
    missing = [user for user in GRANTS if not passwords.get(user)]
    if missing or settings.kafka_sasl_username != ADMIN:
        print(f"need KAFKA_SASL_USERNAME={ADMIN} and passwords for {missing}", file=sys.stderr)
        return 2
    apply(settings, passwords, settings.topics())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
