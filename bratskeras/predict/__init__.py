"""A trained model on new cases: its set-up and contract, runtimes, sliding windows, post-processing, ensembles, the files written."""
