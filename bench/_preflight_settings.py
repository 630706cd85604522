"""Settings for bench/preflight.py: the product's settings plus the bench-only ceiling view."""

from finops.settings import *  # noqa: F403

ROOT_URLCONF = "bench._preflight_urls"
