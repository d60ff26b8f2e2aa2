"""Reading BraTS folders into training batches: discover, read, inspect, preprocess, cache, tf.data pipeline, augment."""
