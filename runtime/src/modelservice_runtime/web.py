"""``python -m modelservice_runtime.web <runtime flags>``: Gunicorn, started by the supervisor (cli.py).

The master forks gevent workers (``gunicorn_conf.RuntimeWorker``); each builds the Flask app after the fork (``load()``), which finds the
model process's socket in ``MODELSERVICE_ENGINE_SOCKET`` and holds no model itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from gunicorn.app.base import BaseApplication

from .config import RuntimeConfig, config_from_args
from .gunicorn_conf import settings
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


# A parsed body reaches the model process pickled (classify and regress send the document), and pickle
# recurses once per nesting level: orjson takes documents 1,024 levels deep, Python's default limit of
# 1,000 frames would turn such a body into a 500 instead of the model's 400.
RECURSION_LIMIT = 4000


def main(argv: Sequence[str] | None = None) -> int:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    config = config_from_args(argv)
    configure_logging(config.log_format, config.log_level)
    RuntimeApplication(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
