"""A harness for multilingual fine-tuning research (CC-Tuning and its baselines, measured alike)."""

__version__ = "0.1.0"
