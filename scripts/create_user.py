#!/usr/bin/env python3
"""Create (or reset the password of) an account: `make user NAME=alice [ROLE=admin]`.

The password is asked twice on a terminal, or read from standard input for scripts:
    printf '%s\n' "$PASSWORD" | make user NAME=alice
The database is DATABASE_URL, else the one of the local stack started by `make run`.
"""

import argparse
import getpass
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("username")
    parser.add_argument("--role", choices=["user", "admin"], default="user")
    parser.add_argument("--reset", action="store_true", help="set a new password if it exists")
    args = parser.parse_args()

    state = Path(os.environ.get("RUN_DIR", ROOT / ".run")) / "stack.json"
    if "DATABASE_URL" not in os.environ and state.exists():
        os.environ["DATABASE_URL"] = json.loads(state.read_text())["DATABASE_URL"]

    from finq_api.schemas import MIN_PASSWORD_LENGTH, USERNAME_PATTERN
    from finq_api.security import hash_password
    from finq_core import accounts
    from finq_core.db import session_scope
    from finq_core.errors import UsernameTaken
    from finq_core.migrate import upgrade

    if not re.match(USERNAME_PATTERN, args.username):
        print(f"username must match {USERNAME_PATTERN}", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"password must have at least {MIN_PASSWORD_LENGTH} characters", file=sys.stderr)
        return 2

    upgrade()
    # The API's rules (finq_core.accounts): names unique ignoring case, a deleted account's
    # name never reused, a reset revokes the account's tokens.
    with session_scope() as session:
        user = accounts.find_user(session, args.username)
        if user is not None and not args.reset:
            print(
                f"user {user.username!r} exists (use --reset to set a new password)",
                file=sys.stderr,
            )
            return 1
        try:
            if user is None:
                accounts.create_user(session, args.username, hash_password(password), args.role)
            else:
                accounts.change_user(
                    session, user, password_hash=hash_password(password), role=args.role
                )
        except UsernameTaken as exc:
            print(exc.detail, file=sys.stderr)
            return 1
    print(f"user {args.username!r} ({args.role}) saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
