"""fraudops shared package: the transaction schema, the feature transform, the model
sidecar, the TFLite runner and checked loader, settings and the PII log filter. Imported by
training and serving alike, so it must never import TensorFlow, pandas or Airflow at module
level. The exceptions are `mlflow_model` and `mlflow_entry`, the registered model's MLflow
wrapper: only MLflow and promote load them, never serving."""
