"""Root conftest. Keep it small: shared helpers live in tests/helpers.py.

The repository root goes on sys.path so tests anywhere in the tree can `from tests.helpers
import ...`, whether or not a test folder has an `__init__.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
