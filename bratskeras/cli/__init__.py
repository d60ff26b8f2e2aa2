"""The `bratskeras` command line: one thin command per verb.

Each verb lives in its own module under `bratskeras/cli/` and is registered
here. Commands import TensorFlow lazily inside their body so `bratskeras
--help` stays instant. Errors a user can cause (`BratsKerasError`, `ValueError`
raised for bad arguments, `OSError` such as a full disk or a folder without
permission) become one line on stderr naming the file, with exit status 1;
`bratskeras --debug VERB ...` shows their traceback instead. Any other
exception is a bug and keeps its traceback. A reader that closes the pipe
early (`bratskeras inspect DIR | head -4`) is not an error: the command stops
quietly, as Python's documentation recommends (exit status 1, nothing printed).
"""

import os
import sys

import click

from bratskeras.core.errors import BratsKerasError, user_message

# What a user can cause; everything else is a bug and shows its traceback.
USER_ERRORS = (BratsKerasError, ValueError, OSError)


class _Group(click.Group):
    """A click group that turns library errors into one-line messages."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # the reader went away: main() stops quietly
        except USER_ERRORS as error:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(user_message(error)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bratskeras")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of its one line.")
def cli(debug):
    """bratskeras: 3-D brain tumor segmentation on BraTS MRI with Keras 3."""


# One module per group of verbs; each exposes COMMANDS, a list of click commands.
_VERB_MODULES = (
    "models",
    "pretrained",
    "data",
    "train",
    "export",
    "inference",
    "bench",
)


def _register_commands():
    import importlib

    for module_name in _VERB_MODULES:
        module = importlib.import_module(f"bratskeras.cli.{module_name}")
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main(argv=None):
    """Console-script entry point (`bratskeras = bratskeras.cli:main`)."""
    try:
        return cli.main(args=argv, prog_name="bratskeras", standalone_mode=True)
    except BrokenPipeError:
        _quiet_broken_pipe()


def _quiet_broken_pipe():
    """Exits 1 without a message after stdout's reader closed the pipe (Python docs, "Note on SIGPIPE").

    stdout is pointed at /dev/null first: Python flushes it at exit, which
    would raise BrokenPipeError again and print "Exception ignored".
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
