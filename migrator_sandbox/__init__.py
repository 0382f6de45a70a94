"""A local double of the Segment Profile API and the Voucherify API, on one port.

Used by ``migrator demo``, ``migrator sandbox``, the tests and the benchmarks.
A package of its own beside ``migrator``, which imports it only inside those two commands.
"""

from __future__ import annotations

from migrator_sandbox.generator import GeneratedProfile, ProfileGenerator, ProfileTruth
from migrator_sandbox.oracle import Verification, expected_customer, verify
from migrator_sandbox.server import (
    SandboxServer,
    ThreadedSandbox,
    build_app,
    sandbox_env,
    serve,
)
from migrator_sandbox.settings import SandboxSettings
from migrator_sandbox.state import Sandbox, SandboxStats

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
