"""ModelService runtime: TensorFlow SavedModels behind TensorFlow Serving's REST API, on Flask and Gunicorn."""

__version__ = "0.1.0"
