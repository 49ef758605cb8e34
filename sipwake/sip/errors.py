"""The exception types for malformed SIP: the transport answers them with 400 (505)."""


class SipParseError(ValueError):
    """Raised for any malformed SIP input; the message is the reason phrase detail."""

    status = 400  # what a request that raises it is answered with


class SipVersionError(SipParseError):
    """A request in a SIP version other than 2.0 (RFC 3261 §21.5.7, RFC 4475 badvers)."""

    status = 505
