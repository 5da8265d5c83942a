"""Write the recommendations API's OpenAPI schema to `serving/openapi.json` (the contract).

Usage: `python scripts/export_openapi.py [--check]`; `--check` writes nothing and exits 1
when the committed file differs from what the code serves.
"""

import argparse
import json
import sys
from pathlib import Path

from features.settings import Settings
from serving.app import create_app

CONTRACT = Path(__file__).resolve().parents[1] / "serving" / "openapi.json"


def render() -> str:
    """The served schema as committed: sorted keys, two-space indent, trailing newline."""
    # Building the app loads nothing (models load in its lifespan): any settings will do.
    schema = create_app(Settings()).openapi()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail instead of writing when the contract is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = CONTRACT.read_text() if CONTRACT.exists() else ""
        if current != text:
            print(f"{CONTRACT} is out of date: run `python scripts/export_openapi.py`",
                  file=sys.stderr)
            return 1
        return 0
    CONTRACT.write_text(text)
    print(f"wrote {CONTRACT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
