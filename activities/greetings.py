"""The greeting activity used by the chaining and sub-orchestration samples."""

from .blueprint import bp


@bp.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    """Greet a city. The parameter name must match input_name."""
    return f"Hello {name}!"
