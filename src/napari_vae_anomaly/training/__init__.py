"""Training the VAE: data loading, augmentation, the training loop, distributed runs."""
