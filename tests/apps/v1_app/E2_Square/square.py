async def run(value: int) -> int:
    return value * value
