"""Libraries the pipeline stages share: the reference simulator, the Keras model, metrics and
MLflow tracking."""
