"""Built-in VAD providers."""
