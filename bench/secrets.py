"""Passwords never leave the process: every URL that is printed, logged or recorded goes
through :func:`mask_url` first.

Store URLs (``postgresql://user:password@host/db``, ``http://user:token@server``) carry
credentials in their user-info part. This module is the one place that hides them, so the
CLI's messages, error lines, ``bench doctor``, the report's index and MLflow tags and
params all mask the same way.
"""

from __future__ import annotations

import re

#: ``scheme://user:password@`` (the password may contain anything but ``@``, ``/`` and
#: whitespace; an ``@`` inside a password must be percent-encoded in a URL anyway).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s/@]+)(?=@)")
MASK = "***"


def mask_url(text: object) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    Works on a bare URL or on any message that contains URLs (an error line, a command
    line); text without credentials comes back unchanged.
    """
    return _USERINFO.sub(lambda m: m.group("head") + MASK, str(text))
