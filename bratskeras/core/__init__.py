"""The shared vocabulary every stage speaks: label schemes, training targets, the model table, run-folder file names, shared defaults and value rules, errors."""
