"""seq2seq: attention-based GRU neural machine translation from the command line."""

# The one place that holds the version: pyproject.toml reads it (tool.setuptools.dynamic).
__version__ = "0.1.0"


def versions(*packages: str) -> dict[str, str | None]:
    """{"seq2seq": its version, "python": Python's, each package: its installed version or
    None} from the packages' metadata, so nothing is imported (torch takes seconds)."""
    import platform
    from importlib import metadata

    found: dict[str, str | None] = {"seq2seq": __version__, "python": platform.python_version()}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
