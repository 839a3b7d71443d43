"""Training: the VAE's pre-training and one Stable-Diffusion training engine (pre-training of the
tiny bases and every fine-tune, sources and suspicious models alike)."""
