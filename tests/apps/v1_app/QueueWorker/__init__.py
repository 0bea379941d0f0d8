import logging


def main(item: str) -> None:
    logging.info("queue item %s", item)
