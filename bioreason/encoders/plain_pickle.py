"""Read a pickled gene dictionary without unpickling it.

Geneformer ships its gene -> token and gene -> median tables as `.pkl` files. Unpickling runs whatever the file says,
so a restricted `pickle.Unpickler` is still an unpickler over a file the user handed us. Instead the file is read with
`pickletools.genops`, which only decodes opcodes, and the data opcodes of a dict of strings and numbers are
interpreted here; any other opcode (a global, a call, a list, bytes, a memo fetch, ...) is refused with the file,
byte offset and opcode named. Nothing in the file can construct an object or call a function. Memo writes are
skipped: such a dict repeats no object, so nothing fetches from the memo.
"""

from __future__ import annotations

import pickletools

SCALARS = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BININT", "BININT1", "BININT2", "INT",
           "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT"}
SKIPPED = {"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}  # framing, memo writes


class PlainPickleError(ValueError):
    """A `.pkl` that is not a plain {str: number} dictionary, or is not a well-formed pickle."""


def _pairs(path: str, items: list, pos: int) -> list[tuple]:
    if len(items) % 2:
        raise PlainPickleError(f"{path}: byte {pos}: odd number of items for a dictionary")
    for key in items[::2]:
        if not isinstance(key, str):
            raise PlainPickleError(f"{path}: byte {pos}: dictionary key {key!r} is not a string")
    return list(zip(items[::2], items[1::2], strict=True))


def read_plain_pickle(path: str) -> dict[str, int | float]:
    """The {str: int | float} dictionary pickled in `path`, read opcode by opcode (see the module docstring)."""
    with open(path, "rb") as fh:
        data = fh.read()
    stack: list = []
    marks: list[int] = []
    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name in SKIPPED:
                continue
            if name == "STOP":
                break
            if name in SCALARS:
                stack.append(int(arg) if isinstance(arg, bool) else arg)  # INT encodes True / False as "I01"
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("DICT", "SETITEMS"):
                start = marks.pop()
                items = stack[start:]
                del stack[start:]
                if name == "DICT":
                    stack.append(dict(_pairs(path, items, pos)))
                elif not stack or not isinstance(stack[-1], dict):
                    raise PlainPickleError(f"{path}: byte {pos}: SETITEMS without a dictionary under it")
                else:
                    stack[-1].update(_pairs(path, items, pos))
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                if not stack or not isinstance(stack[-1], dict):
                    raise PlainPickleError(f"{path}: byte {pos}: SETITEM without a dictionary under it")
                stack[-1].update(_pairs(path, [key, value], pos))
            else:
                raise PlainPickleError(f"{path}: byte {pos}: pickle opcode {name} is not plain data (only a "
                                       "{str: number} dictionary is read; nothing in the file is executed)")
    except (ValueError, IndexError) as err:  # genops on a truncated file, an empty stack
        if isinstance(err, PlainPickleError):
            raise
        raise PlainPickleError(f"{path}: not a well-formed pickle ({err})") from None
    if len(stack) != 1 or not isinstance(stack[0], dict):
        raise PlainPickleError(f"{path}: the pickle does not hold one dictionary")
    for key, value in stack[0].items():
        if not isinstance(value, (int, float)):
            raise PlainPickleError(f"{path}: the value of {key!r} is a {type(value).__name__}, not a number")
    return stack[0]
