"""xapi's error: a code plus string parameters, sent as {Status: Failure, ErrorDescription}."""


class XapiError(Exception):
    """An API error exactly as xapi reports it: ``["CODE", "param", ...]``."""

    def __init__(self, code, *params):
        super().__init__(code, *params)
        self.code = code
        self.params = [str(p) for p in params]

    @property
    def description(self):
        return [self.code] + self.params

    def __str__(self):
        return repr(self.description)


def handle_invalid(cls, ref):
    return XapiError("HANDLE_INVALID", cls, ref)


def uuid_invalid(cls, uuid):
    return XapiError("UUID_INVALID", cls, uuid)
