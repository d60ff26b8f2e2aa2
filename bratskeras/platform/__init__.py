"""The machine and the file system: CPU and device set-up, quiet TensorFlow imports, optional extras, safe writes, benchmarks."""
