"""What a network is: specs (numbers only), presets, the one way in from JSON (`parse`), the
checks of a spec, and one registration per family (`families`) tying its spec class, builder
(`models/`), checks and textbook facts together."""
