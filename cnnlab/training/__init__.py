"""How a network learns: the training config and its checks, the textbook's recipes and results,
Fashion-MNIST's files (read without torch) and its tensors held on the device, the set-up of a
run, the loop and what it reports, and whether a run fits the device's memory."""
