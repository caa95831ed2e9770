"""vitexport: export token-reduced Vision Transformers for dense prediction."""

__version__ = "0.1.0"
