"""fraudops shared package: the transaction schema, the feature transform, the model
sidecar, settings and the PII log filter. Imported by training and serving alike, so it
must never import TensorFlow, pandas or Airflow at module level."""
