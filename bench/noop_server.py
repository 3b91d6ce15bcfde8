"""A gRPC server whose Score does nothing (`python -m bench.noop_server PORT`): the floor
that gRPC, protobuf and loopback put under every inline call on this machine, measured
beside the real server so the benchmark can say what scoring itself adds."""

from __future__ import annotations

import sys
from concurrent import futures

import grpc

from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc


class NoopScoring(fraud_pb2_grpc.FraudScoringServicer):
    def Score(self, request, context):
        return fraud_pb2.ScoreResponse(transaction_id=request.transaction_id)


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(8))
    fraud_pb2_grpc.add_FraudScoringServicer_to_server(NoopScoring(), server)
    server.add_insecure_port(f"127.0.0.1:{int(sys.argv[1])}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
