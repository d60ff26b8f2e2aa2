"""Scoring predictions against references, free of TensorFlow: voxel-wise and surface metrics, lesion-wise metrics, tables, pictures."""
