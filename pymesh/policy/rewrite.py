"""Path rewrites (`http[].rewrite.uri` and `uriRegexRewrite`), as Envoy applies them.

- `uri` replaces what the route matched: with a `prefix` URI match, the matched prefix (the
  rest of the path is kept); with an `exact` or `regex` URI match, the whole path; with no URI
  match, Istio's route matches the prefix `/`, so `/` is what is replaced. A rule with several
  match blocks is compiled into one table entry per block, so the block that matched decides.
- `uriRegexRewrite` replaces every match of its pattern in the path with its RE2 rewrite
  string (`\\1` is a capture group).

The query string is never touched. Targets are raw bytes (`/a%20b?x=1`), as the request line
carries them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pymesh.config.model import HTTPMatchRequest, HTTPRewrite


def rewrite_template(rx: re.Pattern[str], template: str) -> tuple[str | int, ...]:
    """An RE2 rewrite string as literal parts and group numbers (`\\1` is group 1, `\\\\` a
    backslash); ValueError when it is not RE2 substitution syntax valid for `rx`."""
    parts: list[str | int] = []
    lit: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c != "\\":
            lit.append(c)
            i += 1
            continue
        nxt = template[i + 1 : i + 2]
        if nxt == "\\":
            lit.append("\\")
        elif nxt.isdigit():
            group = int(nxt)
            if group > rx.groups:
                raise ValueError(f"\\{group} names a group the pattern does not have")
            if lit:
                parts.append("".join(lit))
                lit = []
            parts.append(group)
        else:
            raise ValueError("a backslash must be followed by a digit or another backslash")
        i += 2
    if lit:
        parts.append("".join(lit))
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class PrefixRewrite:
    """Replace the first `length` characters of the path (None: the whole path) by `value`."""

    value: str
    length: int | None


@dataclass(frozen=True, slots=True)
class RegexPathRewrite:
    """Replace every match of `regex` in the path by the template `parts`."""

    regex: re.Pattern[str]
    parts: tuple[str | int, ...]

    def _expand(self, mo: re.Match[str]) -> str:
        return "".join(p if isinstance(p, str) else (mo.group(p) or "") for p in self.parts)


PathRewrite = PrefixRewrite | RegexPathRewrite


def compile_path_rewrite(
    rewrite: HTTPRewrite | None, match: HTTPMatchRequest | None
) -> PathRewrite | None:
    """The path rewrite of a rule for requests its match block `match` (None: the rule has no
    match blocks) selected; None when the rule rewrites no path."""
    if rewrite is None:
        return None
    if rewrite.uri_regex_rewrite is not None:
        rr = rewrite.uri_regex_rewrite
        return RegexPathRewrite(rr.regex, rewrite_template(rr.regex, rr.rewrite))
    if rewrite.uri is None:
        return None
    uri = match.uri if match is not None else None
    if uri is None:
        return PrefixRewrite(rewrite.uri, 1)  # Istio's route matches the prefix "/"
    if uri.kind == "prefix":
        return PrefixRewrite(rewrite.uri, len(uri.value))
    return PrefixRewrite(rewrite.uri, None)


def rewrite_path(plan: PathRewrite, path: str) -> str:
    """`path` (without the query) after the rewrite."""
    if isinstance(plan, RegexPathRewrite):
        return plan.regex.sub(plan._expand, path)
    if plan.length is None:
        return plan.value
    return plan.value + path[plan.length :]


def rewrite_target(plan: PathRewrite, target: bytes) -> bytes:
    """A raw request target (`/path?query`) with its path rewritten and its query kept."""
    path, sep, query = target.partition(b"?")
    new = rewrite_path(plan, path.decode("latin-1")).encode("latin-1")
    return new + sep + query
