"""A local double of the Segment Profile API and the Voucherify API, on one port.

Used by ``migrator demo``, ``migrator sandbox``, the tests and the benchmarks.
"""

from __future__ import annotations

from migrator.sandbox.generator import GeneratedProfile, ProfileGenerator, ProfileTruth
from migrator.sandbox.oracle import Verification, expected_customer, verify
from migrator.sandbox.server import (
    SandboxServer,
    ThreadedSandbox,
    build_app,
    sandbox_env,
    serve,
)
from migrator.sandbox.settings import SandboxSettings
from migrator.sandbox.state import Sandbox
from migrator.sandbox.stats import SandboxStats

__all__ = [
    "GeneratedProfile",
    "ProfileGenerator",
    "ProfileTruth",
    "Sandbox",
    "SandboxServer",
    "SandboxSettings",
    "SandboxStats",
    "ThreadedSandbox",
    "Verification",
    "build_app",
    "expected_customer",
    "sandbox_env",
    "serve",
    "verify",
]
