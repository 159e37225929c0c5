"""The foundation benchmark rerun with the whole traffic policy armed (issue 3's goal: still
p50 ≤ 1.10×, p99 ≤ 1.15× a bare httpx.Client). See bench/http_client.py.

    python bench/http_client_full_policy.py [--quick] [--rounds N] [--requests N]
"""

from __future__ import annotations

import http_client


def main(argv: list[str] | None = None) -> int:
    """Run bench/http_client.py with `--full-policy`."""
    return http_client.main([*(argv or []), "--full-policy"])


if __name__ == "__main__":
    raise SystemExit(main())
