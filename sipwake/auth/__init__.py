"""Admission: who may register, call, send and read (admission.py), and the throttle
on failed attempts (throttle.py)."""

from sipwake.auth.admission import Admission, Caller, HttpRefusal, without_credentials
from sipwake.auth.throttle import AuthThrottle
from sipwake.auth.users import UserDirectory

__all__ = [
    "Admission", "AuthThrottle", "Caller", "HttpRefusal", "UserDirectory", "without_credentials",
]  # fmt: skip
