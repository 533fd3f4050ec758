"""Training: settings and profiles, the transformers Trainer loop, data-parallel helpers."""
