"""The machine and the file system: CPU and device set-up (and what the CPU can compute), quiet TensorFlow imports, optional extras, safe writes."""
