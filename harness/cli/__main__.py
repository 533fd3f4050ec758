"""`python -m harness.cli ...`: the `harness` command (as `accelerate launch -m harness.cli` runs it)."""

import sys

from harness.cli import main

sys.exit(main())
