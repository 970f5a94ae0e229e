"""Entry point: `cupyprune infer|inspect|bench|serve`."""
import sys

import click

from .. import __version__
from ..atomic import terminate_by_exception
from .bench_cmd import bench_cmd
from .export_cmd import export_cmd
from .infer import infer
from .inspect_cmd import inspect_cmd
from .serve_cmd import serve_cmd


class OneLineErrors(click.Group):
    """click's usage errors as one line, `error: ...`, exit code 2, like the library's own."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        terminate_by_exception()          # SIGTERM: one line, and no temporary file left
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":     # bare `cupyprune`: just the help
                click.echo(e.ctx.get_help())
                sys.exit(0)
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {e.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cupyprune")
def cli():
    """cupyprune: run pruned networks fast, on a GPU (CuPy) or the CPU (NumPy).

    Model files are single .safetensors files written by `cupyprune export` (docs/FORMAT.md).
    """


cli.add_command(infer)
cli.add_command(inspect_cmd)
cli.add_command(bench_cmd)
cli.add_command(export_cmd)
cli.add_command(serve_cmd)
