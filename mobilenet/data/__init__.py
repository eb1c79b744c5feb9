"""Photos: the manifest, downloads, local folders, preprocessing and the preprocessed photo store."""
