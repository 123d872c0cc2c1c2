"""Mirror the registry into an MLflow tracking server, for teams that already use MLflow.

The toolchain's registry stays the source of truth; MLflow gets a read-only-in-spirit copy that a
second export leaves as it is: ``scope`` (which records), ``trials`` (which search trials belong to a
final run), ``plan`` (the MLflow runs, versions and aliases, with no MLflow in it), ``connect`` (URI,
probe, client, errors), ``writer`` (idempotent writes through ``MlflowClient``), ``export`` (the
command's library function). ``mlflow`` (the ``[mlflow]`` extra) is imported only when an export runs.
"""

from toolchain.mlflow_mirror.export import ExportConfig, ExportReport, export_to_mlflow

__all__ = ["ExportConfig", "ExportReport", "export_to_mlflow"]
