"""`bratskeras pretrained`: the shipped models and their cards; MODEL arguments that take pretrained:NAME.

No TensorFlow: the cards are JSON inside the package (bratskeras.pretrained).
"""

import json

import click

from bratskeras import pretrained
from bratskeras.core.errors import ModelError


class ModelSource(click.ParamType):
    """A MODEL argument: an existing `.keras` file or run directory, or "pretrained:NAME" of a shipped model.

    The value stays as typed ("pretrained:NAME" included): the library
    resolves it (bratskeras.pretrained.resolve), and export names its
    outputs after NAME.
    """

    name = "model"

    def convert(self, value, param, ctx):
        if pretrained.is_pretrained(value):
            try:
                pretrained.resolve(value)
            except ModelError as error:
                self.fail(str(error), param, ctx)
            return value
        return click.Path(exists=True).convert(value, param, ctx)


MODEL_SOURCE = ModelSource()


@click.command("pretrained")
@click.option("--json", "as_json", is_flag=True, help="Print the model cards as a JSON list.")
def pretrained_command(as_json):
    """List the pretrained models shipped with bratskeras (use one as pretrained:NAME), with their cards."""
    models = pretrained.catalogue()
    if as_json:
        click.echo(json.dumps([model.card for model in models], indent=1))
    elif not models:
        click.echo("no pretrained models are shipped with this bratskeras")
    else:
        click.echo("\n\n".join(pretrained.card_text(model) for model in models))


COMMANDS = [pretrained_command]
