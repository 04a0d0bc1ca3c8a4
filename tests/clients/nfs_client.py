#!/usr/bin/env python3
"""NFS client for the export tests (python libnfs over Debian's libnfs).

  nfs_client.py URL unlink PATH        removes PATH
  nfs_client.py URL hold PATH          opens PATH, prints "open", then for every line
                                       read from stdin reads the whole file again through
                                       the same open file (the same NFS file handle) and
                                       prints its length and SHA-256, or "error: ..."

URL is the export, e.g. nfs://127.0.0.1/dd?version=4.
"""
import hashlib
import os
import sys

import libnfs


def main() -> int:
    url, cmd, path = sys.argv[1:4]
    nfs = libnfs.NFS(url)
    if cmd == "unlink":
        nfs.unlink(path)
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
