"""Fine-tuning methods. Importing this package registers every built-in method in `METHODS`."""

from methods import cc, vanilla  # noqa: F401  (registers cc, vanilla, none)
from methods.base import METHODS, Method, register_method

__all__ = ["METHODS", "Method", "register_method"]
