"""Settings for bench/ingest.py: the product's settings plus a bench-only URL for the baseline view."""

from finops.settings import *  # noqa: F403

ROOT_URLCONF = "bench._urls"
