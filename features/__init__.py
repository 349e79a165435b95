"""Features: patch encoders and the feature store (Lance tables, Zarr arrays)."""
