"""An activity that fails on purpose, to show retries."""

from .blueprint import bp

# Attempts seen per key. Module state is only good for a demo: a real activity must not rely on running
# in the same process each time.
_attempts: dict[str, int] = {}


@bp.activity_trigger(input_name="key")
def flaky_activity(key: str) -> str:
    """Fail the first two attempts for a key, succeed on the third."""
    _attempts[key] = _attempts.get(key, 0) + 1
    attempt = _attempts[key]
    if attempt <= 2:
        raise RuntimeError(f"flaky_activity: simulated failure on attempt {attempt} for {key!r}")
    return f"succeeded on attempt {attempt}"
