"""De-identification keys: the per-installation salt and the pseudonyms made with it.

Identifiers read from upstream headers (a DICOM ``PatientID``, a ``StudyInstanceUID``) never reach
an output as they are: they are replaced by a salted HMAC, the same for the same value and source
on one installation, and unlinkable to the original without the salt (DICOM PS3.15, basic
profile: "replace with a consistent pseudonym"). The salt is ``$COVID19_IMAGES_SALT``, or a random
key made once in the data root.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

from covid19_images.errors import Covid19ImagesError
from covid19_images.fetch.store import data_root

SALT_ENV: Final = "COVID19_IMAGES_SALT"
PSEUDONYM_HEX: Final = 16


class SaltError(Covid19ImagesError):
    """The salt file exists but cannot be used."""


def salt(root: Path | str | None = None) -> bytes:
    """The key of the pseudonyms: ``$COVID19_IMAGES_SALT``, else ``<root>/salt`` (made once).

    Example:
        >>> import os
        >>> os.environ["COVID19_IMAGES_SALT"] = "example"
        >>> salt()
        b'example'
        >>> del os.environ["COVID19_IMAGES_SALT"]
    """
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode("utf-8")
    base = data_root(root)
    path = base / "salt"
    if not path.is_file():
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".salt.{os.getpid()}"
        tmp.write_text(secrets.token_hex(32), encoding="ascii")
        try:
            os.link(tmp, path)  # atomic, and another build's salt wins a race
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_bytes().strip()
    if not key:
        raise SaltError(f"{path} is empty: delete it (a new salt is made) or set ${SALT_ENV}")
    return key


def keyed_hash(value: str, key: bytes) -> str:
    """HMAC-SHA256 of ``value`` keyed with ``key``, first 16 hex digits.

    Raises:
        ValueError: If ``key`` is empty (an unkeyed hash of a small id space is reversible).

    Example:
        >>> keyed_hash("ieee8023:2", b"secret")
        'eb6ef00284e1f982'
    """
    if not key:
        raise ValueError("the pseudonym salt must not be empty")
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


def pseudonym(source: str, value: str, *, root: Path | str | None = None) -> str:
    """``<source>:<pseudonym>`` for an identifier read from an upstream header.

    The key is salted per source, so one person's id in two sources gives unrelated pseudonyms.

    Example:
        >>> import os
        >>> os.environ["COVID19_IMAGES_SALT"] = "example"
        >>> pseudonym("covid-19-pos-case", "AW123")
        'covid-19-pos-case:81c1f3d97cf0d401'
        >>> del os.environ["COVID19_IMAGES_SALT"]
    """
    key = salt(root)
    text = source + "\x00" + value
    return f"{source}:{keyed_hash(text, key)}"
