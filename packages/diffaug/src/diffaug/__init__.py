"""diffaug: forward-diffusion oversampling of minority image classes (paper section 2.2)."""
