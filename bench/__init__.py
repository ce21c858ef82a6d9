"""proxybench: benchmark proxy-based deep metric learning losses, tracked in MLflow."""

__version__ = "0.1.0"
