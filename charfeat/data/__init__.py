"""Records, label mapping, image sources (local folder, generated sample set, S3) and the P×K sampler."""
