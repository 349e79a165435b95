"""Features: patch encoders (`features.encoders`) and the feature store (`features.store`).

Import the subpackages directly; this package imports nothing heavy on its own.
"""

__all__ = ["encoders", "store"]
