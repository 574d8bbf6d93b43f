"""The check helper the project's Python client scripts share: one line per check, exit on the
first failure, a count at the end."""

PASSED = 0


def check(name, cond, detail=""):
    """Prints `ok   name`, or `FAIL name: detail` and exits non-zero."""
    global PASSED
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        raise SystemExit(1)
    PASSED += 1
    print(f"ok   {name}", flush=True)


def passed():
    """How many checks passed so far."""
    return PASSED
