"""Tokenspend's Python client helper: preflight, run the LLM call on the terms it got, report usage.

Standard library only, and independent of the server's code: copy this folder into a service, or
install the project. README.md beside this file has copy-paste usage.
"""

from .client import (
    ALLOW,
    DENY,
    NEEDS_APPROVAL,
    ApprovalRequired,
    ApprovalTimeout,
    PreflightDenied,
    Tokenspend,
    TokenspendError,
    TokenspendUnavailable,
    usage_from_response,
)

__all__ = [
    "ALLOW",
    "DENY",
    "NEEDS_APPROVAL",
    "ApprovalRequired",
    "ApprovalTimeout",
    "PreflightDenied",
    "Tokenspend",
    "TokenspendError",
    "TokenspendUnavailable",
    "usage_from_response",
]
