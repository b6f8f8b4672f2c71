"""What a network costs and looks like: the layer table on the meta device, memory, diagrams, code export."""
