"""Credentials never leave the process: the one helper that takes them out of a tracking URI (or any
URL in a text) before it is printed, logged, tagged or written.

Secrets for an MLflow server belong where MLflow reads them, ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` or ``MLFLOW_TRACKING_TOKEN``; dor-bench never copies those into any
record. A URI that carries ``user:password@`` still works, but it is shown as ``***@``.
"""

from __future__ import annotations

import re

#: ``scheme://userinfo@``: the userinfo part of any URL (RFC 3986), wherever it stands in a text.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")


def redact(text: str, mask: str | None = "***") -> str:
    """``text`` with the credentials of every URL in it replaced by ``mask``
    (``http://alice:pw@host:5000`` -> ``http://***@host:5000``), or removed when ``mask`` is None
    (``http://host:5000``: a URI to write into a settings file, credentials then from MLflow's
    variables)."""
    return _USERINFO.sub(lambda m: m["scheme"] + (f"{mask}@" if mask is not None else ""), text)
