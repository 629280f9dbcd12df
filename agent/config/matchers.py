"""Envoy header / string matchers and HTTP path and domain rules -> model matchers.

A frame's metadata plays the part of HTTP headers: Aeraki's MetaProtocol
routes match metadata with Envoy HeaderMatchers, and an HTTP/1.1 request's
metadata holds `:path`, `:authority`, `:method` and the lower-cased headers.
Regexes are Python `re` compiled up front (Envoy uses RE2; the common subset
is the same, a pattern RE2 would reject for backtracking features is accepted
here) and bounded in length.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from .errors import FieldError
from .model import MetadataMatch, StringMatch

DEFAULT_MAX_REGEX = 1024       # characters; Envoy bounds RE2 program size instead

PATH = ":path"
AUTHORITY = ":authority"


def compile_regex(pattern: str, field: str, *, ignore_case: bool = False,
                  max_length: int = DEFAULT_MAX_REGEX) -> re.Pattern:
    if len(pattern) > max_length:
        raise FieldError(field, f"regex longer than {max_length} characters")
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise FieldError(field, f"bad regex {pattern!r}: {exc}") from None


def regex_match(pattern: str, field: str, *, ignore_case=False, invert=False,
                max_length=DEFAULT_MAX_REGEX, value: Optional[str] = None) -> StringMatch:
    compiled = compile_regex(pattern, field, ignore_case=ignore_case, max_length=max_length)
    return StringMatch("regex", value if value is not None else pattern, ignore_case=ignore_case,
                       invert=invert, regex=compiled)


def string_matcher(sm, field: str, *, invert=False, max_regex=DEFAULT_MAX_REGEX) -> StringMatch:
    """An envoy.type.matcher.v3.StringMatcher."""
    kind = sm.WhichOneof("match_pattern")
    ignore_case = sm.ignore_case
    if kind == "safe_regex":
        return regex_match(sm.safe_regex.regex, f"{field}.safe_regex.regex",
                           ignore_case=ignore_case, invert=invert, max_length=max_regex)
    if kind in ("exact", "prefix", "suffix", "contains"):
        value = getattr(sm, kind)
        if kind != "exact" and not value:
            raise FieldError(f"{field}.{kind}", "must not be empty")
        return StringMatch(kind, value, ignore_case=ignore_case, invert=invert)
    raise FieldError(field, f"unsupported string matcher {kind or '(none)'}")


def header_matcher(hm, field: str, *, max_regex=DEFAULT_MAX_REGEX) -> MetadataMatch:
    """An envoy.config.route.v3.HeaderMatcher on metadata key `hm.name`."""
    if not hm.name:
        raise FieldError(f"{field}.name", "must not be empty")
    if hm.treat_missing_header_as_empty:
        raise FieldError(f"{field}.treat_missing_header_as_empty", "not supported")
    key = hm.name if hm.name.startswith(":") else hm.name.lower()
    invert = hm.invert_match
    kind = hm.WhichOneof("header_match_specifier")
    if kind is None:                       # no specifier: the key must be present
        return MetadataMatch(key, StringMatch("present", invert=invert))
    if kind == "present_match":
        return MetadataMatch(key, StringMatch("present", invert=invert != (not hm.present_match)))
    if kind == "string_match":
        return MetadataMatch(key, string_matcher(hm.string_match, f"{field}.string_match",
                                                 invert=invert, max_regex=max_regex))
    if kind == "safe_regex_match":
        return MetadataMatch(key, regex_match(hm.safe_regex_match.regex,
                                              f"{field}.safe_regex_match.regex",
                                              invert=invert, max_length=max_regex))
    if kind in ("exact_match", "prefix_match", "suffix_match", "contains_match"):
        value = getattr(hm, kind)
        if kind != "exact_match" and not value:
            raise FieldError(f"{field}.{kind}", "must not be empty")
        return MetadataMatch(key, StringMatch(kind[:-len("_match")], value, invert=invert))
    raise FieldError(f"{field}.{kind}", "not supported")


def path_matcher(match, field: str, *, max_regex=DEFAULT_MAX_REGEX) -> Tuple[MetadataMatch, ...]:
    """The path rule of an envoy RouteMatch as matchers on `:path`.

    Envoy compares `path` and `safe_regex` with the query string removed:
    here the pattern allows an optional `?query` tail instead. A prefix of
    "" or "/" matches every request and needs no matcher (so the same table
    serves frames without a `:path`, as Aeraki's HTTP-RDS encoding expects).
    """
    kind = match.WhichOneof("path_specifier")
    ignore_case = match.HasField("case_sensitive") and not match.case_sensitive.value
    query = r"(?:\?.*)?"
    if kind == "prefix":
        if match.prefix in ("", "/"):
            return ()
        return (MetadataMatch(PATH, StringMatch("prefix", match.prefix, ignore_case=ignore_case)),)
    if kind == "path":
        pattern = re.escape(match.path) + query
        return (MetadataMatch(PATH, regex_match(pattern, f"{field}.path", ignore_case=ignore_case,
                                                max_length=max_regex + len(query),
                                                value=match.path)),)
    if kind == "safe_regex":
        pattern = f"(?:{match.safe_regex.regex}){query}"
        compile_regex(match.safe_regex.regex, f"{field}.safe_regex.regex", max_length=max_regex)
        return (MetadataMatch(PATH, regex_match(pattern, f"{field}.safe_regex.regex",
                                                max_length=max_regex + len(query) + 4,
                                                value=match.safe_regex.regex)),)
    if kind == "path_separated_prefix":
        prefix = match.path_separated_prefix
        pattern = re.escape(prefix) + r"(?:[/?].*)?"
        return (MetadataMatch(PATH, regex_match(pattern, f"{field}.path_separated_prefix",
                                                ignore_case=ignore_case,
                                                max_length=max_regex + 16, value=prefix)),)
    raise FieldError(f"{field}.{kind or 'path_specifier'}",
                     "not supported (prefix, path, safe_regex, path_separated_prefix are)")


def domain_rank(domain: str) -> tuple:
    """Envoy's virtual host search order: exact, suffix wildcards (longest first),
    prefix wildcards (longest first), then "*"."""
    if domain == "*":
        return (3, 0)
    if domain.startswith("*"):
        return (1, -len(domain))
    if domain.endswith("*"):
        return (2, -len(domain))
    return (0, 0)


def domain_matcher(domain: str, field: str) -> Optional[MetadataMatch]:
    """`:authority` matcher for one virtual host domain (None for "*").
    Wildcards never match the empty string, as in Envoy."""
    if domain == "*":
        return None
    if not domain or "*" in domain.strip("*") or domain.count("*") > 1:
        raise FieldError(field, f"bad domain {domain!r}")
    if domain.startswith("*"):
        pattern = ".+" + re.escape(domain[1:])
    elif domain.endswith("*"):
        pattern = re.escape(domain[:-1]) + ".+"
    else:
        return MetadataMatch(AUTHORITY, StringMatch("exact", domain, ignore_case=True))
    return MetadataMatch(AUTHORITY, regex_match(pattern, field, ignore_case=True, value=domain))


def describe(m: MetadataMatch) -> str:
    """One line for explain: `:path prefix "/api"`, `interface not present`."""
    sm = m.match
    neg = "not " if sm.invert else ""
    if sm.kind == "present":
        return f"{m.key} {neg}present"
    case = " (any case)" if sm.ignore_case else ""
    return f"{m.key} {neg}{sm.kind} {sm.value!r}{case}"
