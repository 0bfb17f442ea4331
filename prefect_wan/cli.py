"""The ``prefect-wan`` command: run the emulator, generate one video, or run a batch manifest."""

from __future__ import annotations

from typing import Optional

import typer

from prefect_wan.client.regions import Region

app = typer.Typer(help="Wan first-and-last-frame videos with Prefect.", no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """Wan first-and-last-frame videos with Prefect."""


@app.command()
def emulator(
    port: int = typer.Option(8765, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    region: Region = typer.Option(Region.SINGAPORE, help="Region whose model names are accepted."),
    api_key: Optional[str] = typer.Option(None, help="API key to accept (default: the emulator's fixed key)."),
    pending_seconds: float = typer.Option(1.0, help="Least time a task waits PENDING."),
    running_seconds: float = typer.Option(3.0, help="Time a task spends RUNNING."),
    submit_rps: Optional[float] = typer.Option(None, help="Submissions per second (default: the model's)."),
) -> None:
    """Serve the DashScope emulator until interrupted."""
    from prefect_wan.emulator import EmulatorConfig, serve_forever

    config = EmulatorConfig(
        region=region, pending_seconds=pending_seconds, running_seconds=running_seconds, submit_rps=submit_rps,
        **({"api_keys": [api_key]} if api_key else {}),
    )
    typer.echo(f"DashScope emulator ({region.value}) at http://{host}:{port}", err=False)
    typer.echo(f"API key: {config.api_keys[0]}")
    typer.echo(f"Use: WanCredentials(base_url='http://{host}:{port}', api_key=..., region='{region.value}')", err=False)
    serve_forever(config, host=host, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
