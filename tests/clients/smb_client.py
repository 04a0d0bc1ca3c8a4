#!/usr/bin/env python3
"""SMB3 client for the export tests (smbprotocol's high-level API).

  smb_client.py SERVER SHARE USER PASSWORD range REMOTE OFFSET LENGTH OUT
      reads LENGTH bytes of REMOTE from OFFSET (one ranged read) into the local file OUT
  smb_client.py SERVER SHARE USER PASSWORD list DIR
      prints the names in DIR, one per line

Exits 0 on success; any SMB error is raised (traceback, exit 1).
"""
import sys

import smbclient


def main() -> int:
    server, share, user, password, cmd, *args = sys.argv[1:]
    smbclient.register_session(server, username=user, password=password)
    root = rf"\\{server}\{share}"
    if cmd == "range":
        remote, offset, length, out = args
        with smbclient.open_file(rf"{root}\{remote}", mode="rb") as f:
            f.seek(int(offset))
            data = f.read(int(length))
        with open(out, "wb") as o:
            o.write(data)
    elif cmd == "list":
        (d,) = args
        for name in sorted(smbclient.listdir(rf"{root}\{d}" if d else root)):
            print(name)
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
