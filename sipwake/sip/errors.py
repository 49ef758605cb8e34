"""The one exception type for malformed SIP: the transport answers it with 400."""


class SipParseError(ValueError):
    """Raised for any malformed SIP input; the message is the reason phrase detail."""
