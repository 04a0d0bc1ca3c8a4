#!/usr/bin/env python3
"""NFS client for the export tests (python libnfs over Debian's libnfs).

  nfs_client.py URL unlink PATH        removes PATH
  nfs_client.py URL put PATH LOCAL     writes the local file LOCAL to PATH, replacing what
                                       PATH held (open with O_CREAT|O_TRUNC, then writes)
  nfs_client.py URL hold PATH          opens PATH, prints "open", then for every line
                                       read from stdin reads the whole file again through
                                       the same open file (the same NFS file handle) and
                                       prints its length and SHA-256, or "error: ..."

URL is the export, e.g. nfs://127.0.0.1/dd?version=4. Exits 0 on success; a failed
operation is raised (traceback, exit 1).
"""
import hashlib
import os
import sys

import libnfs


def main() -> int:
    url, cmd, path, *rest = sys.argv[1:]
    nfs = libnfs.NFS(url)
    if cmd == "unlink":
        # python-libnfs raises for ENOENT only; any other error is a negative return.
        ret = nfs.unlink(path)
        if ret != 0:
            raise OSError(-ret, f"unlink {path}: {os.strerror(-ret)}")
        return 0
    if cmd == "put":
        (local,) = rest
        with open(local, "rb") as src:
            data = src.read()
        f = nfs.open(path, mode="wb")
        step = 1 << 20
        for off in range(0, len(data), step):
            # python-libnfs writes only a bytearray (a mutable buffer).
            f.write(bytearray(data[off : off + step]))
        f.close()  # COMMITs (fsync) first
        size = nfs.stat(path)["size"]
        if size != len(data):
            raise OSError(f"{path} has {size} bytes after writing {len(data)}")
        return 0
    if cmd == "hold":
        f = nfs.open(path, mode="rb")
        print("open", flush=True)
        for _ in sys.stdin:
            try:
                # libnfs's seek is relative unless told otherwise.
                f.seek(0, os.SEEK_SET)
                data = bytearray()
                while True:  # one READ may return less than asked
                    part = f.read(1 << 20)
                    if not part:
                        break
                    data += part
                print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
            except Exception as e:  # the test reads what went wrong
                print(f"error: {e}", flush=True)
        return 0
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
