"""What MLflow runs to load a registered fraud-detector version (models from code): it
names the model object. Nothing imports this file; see fraudops.mlflow_model."""

import mlflow

from fraudops.mlflow_model import FraudDetector

mlflow.models.set_model(FraudDetector())
