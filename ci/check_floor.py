"""Fail unless this environment has exactly the versions the floor file pins (a resolver that quietly
picked newer ones would make the floor run prove nothing); print them either way."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def main(path: str) -> int:
    wrong = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, pinned = (part.strip() for part in line.split("=="))
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        print(f"{name}: {installed}" + ("" if installed == pinned else f" (the floor is {pinned})"))
        if installed != pinned:
            wrong.append(name)
    if wrong:
        print(f"Not the floor: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
