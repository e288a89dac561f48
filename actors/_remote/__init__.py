"""Remote messaging: wire messages, the layer that routes them, and the
TCP + Noise transport."""
