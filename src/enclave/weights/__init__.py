"""weights: manifests, hashing, transfer."""
