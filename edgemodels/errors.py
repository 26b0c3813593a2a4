"""One base class for errors in the user's input: the CLI prints them on one line and exits 2."""
class EdgeModelsError(Exception):
    """A problem the user can fix (bad option, bad file, unreachable host); never a bug."""
