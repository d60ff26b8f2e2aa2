"""`fit`: a run planned, its data prepared and checked, the network trained with callbacks and resumable state, best.keras scored on held-out cases; the built-in demo."""
