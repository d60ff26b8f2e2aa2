"""Speed and memory measurements of the models on this machine (`bratskeras bench`): training steps, inference windows, whole cases, side by side where two settings are compared."""
