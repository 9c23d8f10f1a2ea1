"""The one exception type a user sees: printed as `iommuctl: error: ...`, exit status 2."""


class UserError(Exception):
    """Bad input or usage: the message names the file and the field or address."""
