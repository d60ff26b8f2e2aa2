"""The shared vocabulary every stage speaks: label schemes, training targets, errors, a model's input contract, the model table."""
