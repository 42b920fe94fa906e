"""Downloads: try mirrors, verify the content, rename into place, leave nothing half-written."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["download", "fetch", "md5", "DOWNLOAD_TIMEOUT", "WHERE_HINT"]

log = logging.getLogger(__name__)

ENV_VAR = "VAEKIT_DATA"
DOWNLOAD_TIMEOUT = 60.0  # seconds, per network operation
WHERE_HINT = (
    f"Point vaekit at another data folder with --data-dir DIR or the {ENV_VAR} environment "
    "variable (the folder that contains the dataset's sub-folder)."
)


def fetch(url: str, dest: Path) -> None:
    """Download ``url`` into the file ``dest``."""
    req = urllib.request.Request(url, headers={"User-Agent": "vaekit"})
    with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT) as resp, open(dest, "wb") as f:
        shutil.copyfileobj(resp, f)


def download(urls: Sequence[str], dest: Path, verify: Callable[[Path], None]) -> None:
    """Try each URL: fetch to a temp file beside ``dest``, ``verify`` it, rename it into place.

    Raises OSError listing every failure; leaves no partial file (nor a folder it created).
    """
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    errors = []
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for url in urls:
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{dest.name}.", suffix=".part", dir=dest.parent
            )
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                log.info("downloading %s", url)
                fetch(url, tmp)
                verify(tmp)
                tmp.chmod(0o644)  # mkstemp makes it owner-only
                os.replace(tmp, dest)
                return
            except (OSError, ValueError, EOFError, zlib.error) as e:
                errors.append(f"{url}: {e}")
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as e:  # e.g. a read-only data folder
        errors.append(f"cannot write {dest}: {e}")
    for d in created:  # innermost first; only folders this call made and left empty
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    raise OSError("download failed:\n  " + "\n  ".join(errors))


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
