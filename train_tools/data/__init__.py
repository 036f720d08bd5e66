"""What the tools run on: Fashion-MNIST, the Gaussian mixture, seed ranges, CFG prompts."""
