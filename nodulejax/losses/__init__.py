"""Pure loss functions: FPR (CE / Beta), synthesizer (VAE + WGAN-GP), detection (heatmaps,
RPN) and segmentation."""
