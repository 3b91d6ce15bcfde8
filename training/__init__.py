"""Training pipeline stages: one module per stage, each a typed function plus a CLI entry point."""
