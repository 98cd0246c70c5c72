"""The networks (flax modules) and the logic beside them: layers, ResUNet, RPN, DenseUNet, VAE,
critic, boxes, output heads, the config -> model builders, trained-model handles, Table 2."""
