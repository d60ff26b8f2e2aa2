"""Reading BraTS folders into training batches: layout rows and file formats, discover, read, inspect, preprocess, cache, tf.data pipeline, augmentation; a model's input contract."""
