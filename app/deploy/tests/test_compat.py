"""The legacy branches of ``deploy.compat`` that can be exercised on the modern profile."""

from urllib.parse import urlparse

import pytest
from channels.security.websocket import OriginValidator

from deploy import compat
from deploy.tests.helpers import modern_only


@modern_only
def test_modern_channels_origin_validator_is_used_as_is():
    validator = compat.allowed_hosts_origin_validator(None)
    assert type(validator) is OriginValidator


@modern_only
@pytest.mark.parametrize(
    "pattern", ["localhost", ".example.org", "example.org", "http://example.org:8080"]
)
@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "http://localhost:8000",
        "https://deploy.example.org",
        "http://example.org:8080",
        "https://example.org:8080",
        "http://evil.example",
        "null",
    ],
)
def test_repaired_origin_matching_agrees_with_modern_channels(pattern, origin):
    parsed = urlparse(origin)
    modern = OriginValidator(None, [pattern]).match_allowed_origin(parsed, pattern)
    repaired = compat._OriginValidator(None, [pattern]).match_allowed_origin(parsed, pattern)
    assert repaired == modern
