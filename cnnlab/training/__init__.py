"""How a network learns: the training config, the textbook's recipes, Fashion-MNIST on the device, the loop."""
