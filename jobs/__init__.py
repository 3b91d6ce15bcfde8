"""Scheduled jobs the Airflow DAGs run beside the pipeline: the label watch and the daily digest."""
