"""What every data source shares."""


class DataError(Exception):
    """A dataset could not be loaded; the message says what was tried."""
