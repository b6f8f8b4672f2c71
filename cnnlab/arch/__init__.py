"""What a network is: specs, presets, checks of a spec, and the builders that turn a spec into an nn.Module."""
