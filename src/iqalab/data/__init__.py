"""Data: canonical tables and their validator, image cache, splits, torch loaders and real-dataset adapters."""
