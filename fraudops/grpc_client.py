"""What a project client of the gRPC server (replay, the benchmark, the tests) sends to
say who it is: its token in the `authorization` metadata of every call, as
`Bearer <token>` (the token from `fraudops-clients add`, given as FRAUDOPS_CLIENT_TOKEN)."""

from __future__ import annotations

from collections import namedtuple

import grpc

AUTH_HEADER = "authorization"


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata of one call made with `token`; none without a token (anonymous)."""
    return ((AUTH_HEADER, f"Bearer {token}"),) if token else ()


class _CallDetails(
    namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),  # fmt: skip
    grpc.ClientCallDetails,
):
    pass


class _Bearer(grpc.UnaryUnaryClientInterceptor):
    """Adds the token to every unary call of a channel."""

    def __init__(self, token: str):
        self._metadata = bearer_metadata(token)

    def intercept_unary_unary(self, continuation, details, request):
        metadata = (*(details.metadata or ()), *self._metadata)
        return continuation(
            _CallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
                details.compression,
            ),  # fmt: skip
            request,
        )


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """`channel`, with `token` on every call; unchanged without a token."""
    return grpc.intercept_channel(channel, _Bearer(token)) if token else channel
