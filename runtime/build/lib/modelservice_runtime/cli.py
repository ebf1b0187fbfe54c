"""``modelservice-runtime``: start the REST server the way ``tensorflow_model_server`` starts.

modelservice-runtime --model_name=iris --model_base_path=/models/iris --rest_api_port=8501
modelservice-runtime --model_config_file=/config/models.config --workers=2
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from gunicorn.app.base import BaseApplication

from .config import ConfigError, RuntimeConfig, config_from_args
from .gunicorn_conf import prepare_multiprocess_metrics, settings
from .logs import configure_logging


class RuntimeApplication(BaseApplication):  # type: ignore[misc]
    """Gunicorn with our settings; ``load()`` runs in each worker, after the fork."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.runtime_config = config
        super().__init__()

    def load_config(self) -> None:
        for key, value in settings(self.runtime_config).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app

        return create_app(self.runtime_config)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = config_from_args(argv)
    except ConfigError as exc:
        print(f"modelservice-runtime: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_format, config.log_level)
    prepare_multiprocess_metrics()
    for model in config.models:
        logging.getLogger(__name__).info(
            "Serving model %s from %s (%s policy)", model.name, model.base_path, model.policy.kind
        )
    RuntimeApplication(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
