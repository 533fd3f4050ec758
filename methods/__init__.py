"""Fine-tuning methods. Importing this package registers every built-in method in `METHODS`."""

from methods import aug_en, aug_mt, cc, sdrrl, vanilla  # noqa: F401  (registers aug_en, aug_mt, cc, sdrrl, vanilla, none)
from methods.base import METHODS, Method, register_method

__all__ = ["METHODS", "Method", "register_method"]
