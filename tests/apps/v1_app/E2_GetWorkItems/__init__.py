def main(count: int) -> list:
    return list(range(1, count + 1))
