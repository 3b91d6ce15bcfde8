"""Scoring service: gRPC server, Kafka scorer, model store with hot reload, persistence."""
