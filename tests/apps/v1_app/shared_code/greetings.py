"""Code shared by several functions, imported relatively as the official samples do."""


def greet(name: str) -> str:
    return f"Hello {name}!"
