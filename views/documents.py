"""Placeholder until this area is built."""


def register(appbuilder) -> None:
    pass
