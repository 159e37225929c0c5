"""Path normalization, from the raw request target, as Envoy does it for Istio.

An inbound server must normalize the path **before** authorization and hand the app the same
normalized path, or a policy on `/admin` is bypassed by `//admin`, `/%2Fadmin`, `/a/../admin`
(CVE-2019-9901, CVE-2021-31920). Servers decode the path for the app (`/%2Fadmin` reaches an
ASGI app as `//admin`), so normalization starts from the **raw** target — ASGI `raw_path` plus
`query_string`, or the request line — never from the decoded `path`.

    from pymesh.policy.paths import normalize_path, PathRejection

    result = normalize_path(b"/app/%2E./admin?x=1")   # default: DECODE_AND_MERGE_SLASHES
    if isinstance(result, PathRejection):
        ...  # answer result.status (400), log result.reason
    elif result.redirect:
        ...  # 307 to result.target (only with UNESCAPE_AND_REDIRECT)
    else:
        result.path         # "/admin": what AuthorizationPolicy paths match (no query)
        result.raw_path     # b"/admin": ASGI scope["raw_path"] for the app
        result.asgi_path()  # "/admin": ASGI scope["path"] (percent-decoded once, UTF-8)
        result.query        # "x=1": ASGI scope["query_string"], unchanged

Istio's modes (`meshConfig.pathNormalization.normalization`) map to Envoy's settings:

- `NONE`: nothing (a fragment is still removed);
- `BASE`: `normalize_path` (RFC 3986 dot segments, `\\` → `/`, unreserved `%XX` decoded);
- `MERGE_SLASHES`: BASE + `merge_slashes`;
- `DECODE_AND_MERGE_SLASHES` (the default): MERGE_SLASHES, with `%2F` / `%5C` decoded first
  (`UNESCAPE_AND_FORWARD`).

`normalize_path` reproduces Envoy's steps in Envoy's order: escaped slashes
(`path_with_escaped_slashes_action`: KEEP_UNCHANGED, REJECT_REQUEST, UNESCAPE_AND_REDIRECT,
UNESCAPE_AND_FORWARD), then Chromium's path canonicalizer as vendored by Envoy
(`normalize_path`), then `merge_slashes`; all on the path only — the query is kept as sent.
pymesh is stricter than Envoy in three places, in every mode: a NUL (`%00` or raw) or any raw
control character in the target is rejected (400); a path that does not start with `/` is
rejected (400: absolute-form and asterisk-form targets are the server's business, CVE-2026-33186);
and merging slashes never leaves `//` for an all-slash path. A fragment (`#...`, which clients
should never send) is removed before anything else, as Istio's expectations say
(`/app#foo` → `/app`); `PathOptions(reject_fragment=True)` rejects it instead.

Everything here is pure string work: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

__all__ = [
    "DEFAULT_PATH_OPTIONS",
    "EscapedSlashes",
    "NormalizedPath",
    "PathMode",
    "PathOptions",
    "PathRejection",
    "normalize_path",
]


class PathMode(StrEnum):
    """Istio's path normalization modes (MeshConfig `pathNormalization.normalization`)."""

    NONE = "NONE"
    BASE = "BASE"
    MERGE_SLASHES = "MERGE_SLASHES"
    DECODE_AND_MERGE_SLASHES = "DECODE_AND_MERGE_SLASHES"


class EscapedSlashes(StrEnum):
    """Envoy's `path_with_escaped_slashes_action`: what to do with `%2F`, `%2f`, `%5C`, `%5c`."""

    KEEP_UNCHANGED = "KEEP_UNCHANGED"
    REJECT_REQUEST = "REJECT_REQUEST"
    UNESCAPE_AND_REDIRECT = "UNESCAPE_AND_REDIRECT"
    UNESCAPE_AND_FORWARD = "UNESCAPE_AND_FORWARD"


@dataclass(frozen=True, slots=True)
class PathOptions:
    """Envoy's normalization settings. Build them once (per listener), not per request.

    `normalize`: RFC 3986 dot-segment removal, backslash to slash, percent-encoded unreserved
    characters decoded, other unsafe characters percent-encoded (Envoy's `normalize_path`).
    `merge_slashes`: runs of `/` become one. `escaped_slashes`: see `EscapedSlashes`.
    `reject_fragment`: a `#fragment` is rejected (400) instead of removed.
    """

    normalize: bool = True
    merge_slashes: bool = True
    escaped_slashes: EscapedSlashes = EscapedSlashes.UNESCAPE_AND_FORWARD
    reject_fragment: bool = False

    @classmethod
    def for_mode(cls, mode: PathMode | str, *, reject_fragment: bool = False) -> PathOptions:
        """The settings Istio gives Envoy for `mode`."""
        m = PathMode(mode)
        if m is PathMode.NONE:
            return cls(False, False, EscapedSlashes.KEEP_UNCHANGED, reject_fragment)
        if m is PathMode.BASE:
            return cls(True, False, EscapedSlashes.KEEP_UNCHANGED, reject_fragment)
        if m is PathMode.MERGE_SLASHES:
            return cls(True, True, EscapedSlashes.KEEP_UNCHANGED, reject_fragment)
        return cls(True, True, EscapedSlashes.UNESCAPE_AND_FORWARD, reject_fragment)


DEFAULT_PATH_OPTIONS = PathOptions.for_mode(PathMode.DECODE_AND_MERGE_SLASHES)


class NormalizedPath(NamedTuple):
    """A request target after normalization.

    `path` is the normalized path, still percent-encoded, without the query: what
    AuthorizationPolicy `paths` match and what the app receives as its raw path. `query` is the
    raw query after `?` ("" when there is none), unchanged. `redirect` is True only with
    `UNESCAPE_AND_REDIRECT` when escaped slashes were found: answer 307 with
    `Location: <target>` (Envoy answers 400 instead for gRPC requests) rather than serving.
    """

    path: str
    query: str = ""
    redirect: bool = False

    @property
    def raw_path(self) -> bytes:
        """The normalized path as bytes (ASGI `scope["raw_path"]`)."""
        return self.path.encode("latin-1")

    @property
    def target(self) -> str:
        """Path and query, as a request line or a `Location` header carries them."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def asgi_path(self) -> str:
        """ASGI `scope["path"]`: the normalized path percent-decoded once, as UTF-8 (as uvicorn
        decodes it; invalid UTF-8 becomes U+FFFD)."""
        if "%" not in self.path and self.path.isascii():
            return self.path
        return unquote_to_bytes(self.raw_path).decode("utf-8", "replace")

    def wsgi_path_info(self) -> str:
        """WSGI `PATH_INFO`: the normalized path percent-decoded once, bytes as latin-1
        (PEP 3333)."""
        if "%" not in self.path:
            return self.path
        return unquote_to_bytes(self.raw_path).decode("latin-1")


class PathRejection(NamedTuple):
    """A target normalization refuses: answer `status` (400); `reason` is for the log."""

    status: int
    reason: str


# ---------------------------------------------------------------------------------------------
# Chromium's path canonicalizer as vendored by Envoy (source/common/chromium_url/
# url_canon_path.cc; BSD-style license, Chromium Authors), ported to Python: the character
# table and DoPartialPath, IsDot, ClassifyAfterDot, BackUpToPreviousSlash, CheckForNestedEscapes.

_PASS = 0
_SPECIAL = 1
_ESCAPE = 2 | _SPECIAL
_UNESCAPE = 4
_INVALID = 8 | _SPECIAL


def _char_table() -> tuple[int, ...]:
    t = [_ESCAPE] * 256  # control characters and every byte >= 0x80
    t[0] = _INVALID
    for c in "!$&'()*+,/:;=@[]":
        t[ord(c)] = _PASS
    for c in '"#%<>?\\^`{|}\x7f ':
        t[ord(c)] = _ESCAPE
    for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_~":
        t[ord(c)] = _UNESCAPE
    t[ord(".")] = _SPECIAL
    return tuple(t)


_FLAGS = _char_table()
_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_UPPER = "0123456789ABCDEF"
_NOT_A_DIRECTORY, _DIRECTORY_CUR, _DIRECTORY_UP = 0, 1, 2


def _is_dot(spec: str, i: int, end: int) -> int:
    """Length of a dot at `spec[i]`: 1 for `.`, 3 for `%2e`/`%2E`, else 0."""
    if spec[i] == ".":
        return 1
    if spec[i] == "%" and i + 3 <= end and spec[i + 1] == "2" and spec[i + 2] in "eE":
        return 3
    return 0


def _classify_after_dot(spec: str, after: int, end: int) -> tuple[int, int]:
    """What a dot that follows a slash means, and how many more input chars it consumes."""
    if after == end:
        return _DIRECTORY_CUR, 0
    if spec[after] in "/\\":
        return _DIRECTORY_CUR, 1
    second = _is_dot(spec, after, end)
    if second:
        after_second = after + second
        if after_second == end:
            return _DIRECTORY_UP, second
        if spec[after_second] in "/\\":
            return _DIRECTORY_UP, second + 1
    return _NOT_A_DIRECTORY, 0


def _back_up_to_previous_slash(out: list[str], begin: int) -> None:
    """Drop the last segment of `out` (which ends with `/`), never above `begin`."""
    i = len(out) - 1
    if i == begin:
        return
    i -= 1
    while out[i] != "/" and i > begin:
        i -= 1
    del out[i + 1 :]


def _decode_escaped(s: str, i: int, end: int) -> int:
    """The byte of a valid `%XX` escape at `s[i]`, or -1."""
    if i + 3 > end or s[i + 1] not in _HEX or s[i + 2] not in _HEX:
        return -1
    return int(s[i + 1 : i + 3], 16)


def _check_nested_escapes(
    spec: str, next_index: int, end: int, last_invalid: int, out: list[str]
) -> None:
    """Keep `%%30%30`-style input from turning into a valid escape after unescaping."""
    length = len(out)
    last = out[-1]
    append_next = last_invalid == length - 2
    if append_next:
        if next_index == end or ord(spec[next_index]) >= 0x80:
            return
        out.append(spec[next_index])
    if _decode_escaped("".join(out[last_invalid : last_invalid + 3]), 0, 3) >= 0:
        if not append_next:
            out.append(out[last_invalid + 1])
        out[last_invalid + 1] = "2"
        out[last_invalid + 2] = "5"
        out.append(last)
    elif append_next:
        del out[length:]


def _canonicalize(spec: str) -> str | None:
    """Envoy's `normalize_path` on a path (no query); None when Envoy refuses it (NUL)."""
    out: list[str] = []
    if not spec or spec[0] not in "/\\":
        out.append("/")
    begin = 0
    end = len(spec)
    last_invalid = -(1 << 30)
    ok = True
    i = 0
    while i < end:
        ch = spec[i]
        code = ord(ch)
        flags = _FLAGS[code]
        if not flags & _SPECIAL:
            out.append(ch)
        elif dotlen := _is_dot(spec, i, end):
            if len(out) > begin and out[-1] == "/":
                kind, consumed = _classify_after_dot(spec, i + dotlen, end)
                if kind == _NOT_A_DIRECTORY:
                    out.append(".")
                    i += dotlen - 1
                elif kind == _DIRECTORY_CUR:
                    i += dotlen + consumed - 1
                else:
                    _back_up_to_previous_slash(out, begin)
                    i += dotlen + consumed - 1
            else:
                out.append(".")
                i += dotlen - 1
        elif ch == "\\":
            out.append("/")
        elif ch == "%":
            value = _decode_escaped(spec, i, end)
            if value >= 0:
                i += 2
                vflags = _FLAGS[value]
                if vflags & _UNESCAPE:
                    out.append(chr(value))
                    if last_invalid >= len(out) - 3:
                        _check_nested_escapes(spec, i + 1, end, last_invalid, out)
                else:
                    out += ("%", spec[i - 1], spec[i])
                    if vflags & 8:
                        ok = False
            else:
                last_invalid = len(out)
                out.append("%")
        else:
            out += ("%", _HEX_UPPER[code >> 4], _HEX_UPPER[code & 15])
            if flags & 8:
                ok = False
        i += 1
    return "".join(out) if ok else None


def _merge_slashes(path: str) -> str:
    """Envoy's `merge_slashes` (and `/` rather than `//` for an all-slash path)."""
    if "//" not in path:
        return path
    inner = "/".join(s for s in path.split("/") if s)
    if not inner:
        return "/"
    prefix = "/" if path.startswith("/") else ""
    suffix = "/" if path.endswith("/") else ""
    return f"{prefix}{inner}{suffix}"


_ESCAPED_SLASH = re.compile(r"%(?:2[fF]|5[cC])")
# Targets with nothing to normalize (the common case): no %, no \, no control or unsafe chars.
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/\[\]]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalize_path(
    target: str | bytes, options: PathOptions = DEFAULT_PATH_OPTIONS
) -> NormalizedPath | PathRejection:
    """Normalize a raw request target (`/path?query#fragment`, bytes or str) as Envoy does
    under `options`; the default is Istio's DECODE_AND_MERGE_SLASHES.

    Returns the `NormalizedPath` (what authorization matches and what the app receives), or a
    `PathRejection` (400) for a NUL or control character, a target that does not start with
    `/`, an escaped slash under REJECT_REQUEST, or a fragment under `reject_fragment`.
    """
    if isinstance(target, bytes):
        text = target.decode("latin-1")
    elif target.isascii():
        text = target
    else:  # one character per byte, as a server hands the raw target over
        text = target.encode("utf-8").decode("latin-1")
    if _CONTROL.search(text):
        if "\x00" in text:
            return PathRejection(400, "NUL character in the request target")
        return PathRejection(400, "control character in the request target")
    hash_at = text.find("#")
    if hash_at >= 0:
        if options.reject_fragment:
            return PathRejection(400, "fragment (#) in the request target")
        text = text[:hash_at]
    path, _, query = text.partition("?")
    if not path.startswith("/"):
        what = "empty path" if not path else f"path {path[:40]!r} does not start with /"
        return PathRejection(400, f"{what} (only origin-form targets are served)")

    # Fast path: nothing the canonicalizer would change, no slash runs to merge.
    if _PLAIN.fullmatch(path) and "/." not in path and not (options.merge_slashes and "//" in path):
        return NormalizedPath(path, query)

    if "%00" in path:
        return PathRejection(400, "NUL (%00) in the path")
    redirect = False
    action = options.escaped_slashes
    if action is not EscapedSlashes.KEEP_UNCHANGED and _ESCAPED_SLASH.search(path):
        if action is EscapedSlashes.REJECT_REQUEST:
            return PathRejection(400, "escaped slash (%2F or %5C) in the path")
        redirect = action is EscapedSlashes.UNESCAPE_AND_REDIRECT
        path = _ESCAPED_SLASH.sub(lambda mo: "/" if mo.group(0)[1] == "2" else "\\", path)
    if options.normalize:
        canonical = _canonicalize(path)
        if canonical is None:  # pragma: no cover - NUL is rejected above
            return PathRejection(400, "invalid path")
        path = canonical
    if options.merge_slashes:
        path = _merge_slashes(path)
    return NormalizedPath(path, query, redirect)
