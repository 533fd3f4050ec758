"""Fine-tuning methods. Importing this package registers every built-in method in `METHODS`."""

from harness.core.method import METHODS, Method, register_method
from harness.methods import aug_en, aug_mt, cc, sdrrl, vanilla  # noqa: F401  (registers aug_en, aug_mt, cc, sdrrl, vanilla, none)

__all__ = ["METHODS", "Method", "register_method"]
