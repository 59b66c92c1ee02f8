"""Photos: reading them safely, a resized copy of each for training, the model's preprocessing.

    reading      read_image_checked (every file the app did not write), ImageRejected, thumbnails
    cache        the per-dataset, per-size cache of resized JPEGs: build_image_cache, open_cached
    transforms   (torch) train_transform, eval_transform and Normalise from the backbone's data config
"""
