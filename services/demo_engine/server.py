from __future__ import annotations

import uvicorn

from tiller.common.lifecycle import run_service
from tiller.common.net import bind
from tiller.demo_engine.app import create_app
from tiller.demo_engine.settings import DemoSettings


async def serve(settings: DemoSettings) -> None:
    sock = bind(settings.host, settings.port)
    config = uvicorn.Config(
        create_app(settings),
        log_level=settings.log_level,
        log_config=None,  # JSON lines, as every service's
        access_log=False,
        lifespan="off",
    )
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    run_service("demo-engine", DemoSettings.from_env, serve)
