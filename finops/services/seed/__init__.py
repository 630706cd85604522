"""Seed data: the shipped model catalog with public list prices (`catalog`), and a realistic demo
data set (`demo`: what it holds in `demo_specs`, its usage generator in `demo_usage`).

The public names are re-exported here, so callers write `from finops.services import seed` and
`seed.catalog_seed()`, `seed.demo_seed()`, `seed.DEMO_API_KEY`.
"""

from .catalog import PRICE_FIELDS, SEED_CATALOG_PATH, catalog_counts_format, catalog_seed, seed_catalog_load
from .demo import DemoSummary, demo_seed
from .demo_specs import (
    DEMO_API_KEY,
    DEMO_MEMBERS,
    DEMO_PASSWORD,
    DEMO_PLATFORM_KEY,
    DEMO_REQUEST_PREFIX,
    DEMO_TENANT_SLUG,
    DEMO_UNKNOWN_MODEL,
    DEMO_USERNAME,
)

__all__ = [
    "DEMO_API_KEY",
    "DEMO_MEMBERS",
    "DEMO_PASSWORD",
    "DEMO_PLATFORM_KEY",
    "DEMO_REQUEST_PREFIX",
    "DEMO_TENANT_SLUG",
    "DEMO_UNKNOWN_MODEL",
    "DEMO_USERNAME",
    "PRICE_FIELDS",
    "SEED_CATALOG_PATH",
    "DemoSummary",
    "catalog_counts_format",
    "catalog_seed",
    "demo_seed",
    "seed_catalog_load",
]
