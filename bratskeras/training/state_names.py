"""Names of the variables a resume state holds, independent of variable order and Keras' name counters.

A state is a tf.train.Checkpoint keyed by these names (`state_variables`),
so a resumed run restores each variable by what it is, not by position.
"""

import re

from bratskeras.core.errors import ConfigError


def state_variables(model, optimizer):
    """{name: variable} of everything a resume state holds.

    Names do not depend on the order of the variables nor on Keras' process-
    wide name counters: "model/<layer>/<variable>" walks the model's layers
    by their names (a dropout layer's seed state is "model/head_dropout/
    seed_generator_state", where Keras' own path would be "seed_generator_2/
    ..."); "optimizer/<optimizer>/<variable>" drops the optimizer's counter
    suffix ("adam_w_1/iteration" -> "optimizer/adam_w/iteration") and names a
    slot after its model variable ("optimizer/adam_w/enc0_conv0/kernel/
    momentum").

    Raises:
        ConfigError: two variables would share a name, or a model variable
            belongs to no layer.
    """
    named = {}
    for name, variable in _layer_variables(model, "model"):
        _add_unique(named, name, variable)
    owned = {id(v) for v in named.values()}
    stray = [v.path for v in model.variables if id(v) not in owned]
    if stray:
        raise ConfigError(f"model variable {stray[0]} belongs to no layer; it cannot be saved by name")
    # Keras names a slot after its model variable's path with "/" -> "_" (a Sequential's
    # path starts with its counter-numbered name): renamed after the variable's state name.
    slot_owners = {v.path.replace("/", "_"): name.removeprefix("model/") for name, v in named.items()}
    for variable in optimizer.variables:
        owner, _, rest = variable.path.partition("/")
        reference = max((flat for flat in slot_owners if rest.startswith(flat + "_")), key=len, default=None)
        if reference is not None:
            rest = f"{slot_owners[reference]}/{rest[len(reference) + 1:]}"
        _add_unique(named, f"optimizer/{re.sub(r'_[0-9]+$', '', owner)}/{rest}", variable)
    return named


def _layer_variables(layer, scope):
    """(name, variable) of `layer` and its sublayers, named scope/layer/.../variable."""
    sublayers = getattr(layer, "layers", None)
    if not sublayers:
        for variable in layer.variables:
            yield f"{scope}/{variable.name}", variable
        return
    for sublayer in sublayers:
        yield from _layer_variables(sublayer, f"{scope}/{sublayer.name}")


def _add_unique(named, name, variable):
    if name in named and named[name] is not variable:
        raise ConfigError(f"two variables are named {name}; a resume state needs unique names")
    named[name] = variable


def trackables(variables):
    """tf.train.Checkpoint keyword arguments: {"model": {name: tf.Variable}, "optimizer": {...}}."""
    groups = {}
    for name, variable in variables.items():
        group, _, rest = name.partition("/")
        # .value: the backend's tf.Variable (a MirroredVariable under a strategy).
        groups.setdefault(group, {})[rest] = getattr(variable, "value", variable)
    return groups


def checkpoint_key(name):
    """The key tf.train.Checkpoint gives variable `name` ('.' -> '..', '/' -> '.S' inside a dict key)."""
    group, _, rest = name.partition("/")
    return f"{group}/{rest.replace('.', '..').replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"


def saved_names(reader):
    """{checkpoint key: variable name} for the model and optimizer variables of a checkpoint."""
    names = {}
    for key in reader.get_variable_to_shape_map():
        group, _, rest = key.partition("/")
        if group in ("model", "optimizer") and rest.endswith("/.ATTRIBUTES/VARIABLE_VALUE"):
            escaped = rest[:-len("/.ATTRIBUTES/VARIABLE_VALUE")]
            names[key] = f"{group}/" + re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), escaped)
    return names
