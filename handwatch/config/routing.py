"""Pure: which endpoints serve a rule's first reading and its second, and what is wrong with the names a rule gives."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from handwatch.config.endpoint import Endpoint
from handwatch.config.schema import Config, Rule


def _unknown(name: str, names: Sequence[str]) -> str:
    if not names:
        return f"no endpoint is called {name!r}: no endpoint has a `name:` yet (add `name: {name}` to one)"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no endpoint is called {name!r} (the names are {', '.join(map(repr, names))}){hint}"


def problems(rule: Rule, endpoints: Sequence[Endpoint], where: str = "") -> list[str]:
    """What is wrong with the rule's `endpoint` and `second_opinion`, each line led by its key path (`where` is the
    path of the mapping the rule came from, like `folders[1].`)."""
    names = [ep.name for ep in endpoints if ep.name]
    out = [f"{where}endpoint: {_unknown(n, names)}" for n in rule.endpoint if n not in names]
    second = rule.second_opinion
    if second is None:
        return out
    if second.endpoint not in names:
        out.append(f"{where}second_opinion: {_unknown(second.endpoint, names)}")
    elif second.endpoint in rule.endpoint:
        out.append(
            f"{where}second_opinion: {second.endpoint!r} also serves the first reading (endpoint: "
            f"{list(rule.endpoint)}); a second opinion must come from another endpoint"
        )
    elif rule.engine == "vlm" and not rule.endpoint and len(endpoints) == 1:  # Tesseract reads first elsewhere
        out.append(
            f"{where}second_opinion: {second.endpoint!r} is the only endpoint, so it would read the page twice; "
            "add another endpoint for the first reading"
        )
    return out


def narrowing(rule: Rule, folder_rule: Rule, endpoints: Sequence[Endpoint]) -> list[str]:
    """What is wrong with a rule file's endpoints: it may only choose among those its folder's config entry uses
    (a file anyone who can write into the folder may leave must not send its pages to an endpoint the folder's
    owner did not choose, a remote one, say)."""
    used = first_route(folder_rule, endpoints) + second_route(folder_rule, endpoints)
    allowed = {endpoints[i].name for i in used if endpoints[i].name}
    named = [("endpoint", n) for n in rule.endpoint]
    named += [("second_opinion", rule.second_opinion.endpoint)] if rule.second_opinion else []
    shown = ", ".join(sorted(map(repr, allowed))) or "none with a name"
    return [
        f"{key}: {n!r} is not an endpoint this folder's config entry uses ({shown}); a rule file may only choose among those"
        for key, n in named
        if n not in allowed
    ]


def first_route(rule: Rule, endpoints: Sequence[Endpoint]) -> tuple[int, ...]:
    """The endpoints (indexes into `endpoints`) that serve the rule's first reading, in order of preference when
    the rule names them; every endpoint but the second opinion's when it does not."""
    if rule.endpoint:
        at = {ep.name: i for i, ep in enumerate(endpoints) if ep.name}
        return tuple(at[n] for n in rule.endpoint if n in at)
    second = rule.second_opinion.endpoint if rule.second_opinion else None
    return tuple(i for i, ep in enumerate(endpoints) if second is None or ep.name != second)


def second_route(rule: Rule, endpoints: Sequence[Endpoint]) -> tuple[int, ...]:
    """The endpoint (as a one-index route) that reads the pages in doubt again; () when the rule has none."""
    if rule.second_opinion is None:
        return ()
    return tuple(i for i, ep in enumerate(endpoints) if ep.name == rule.second_opinion.endpoint)[:1]


def config_problems(cfg: Config) -> list[str]:
    """Endpoint names are unique, and `defaults` and every folder name endpoints that exist (a rule file's are
    checked where it is read, `config.rules`)."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, ep in enumerate(cfg.endpoints):
        if ep.name in seen:
            out.append(f"endpoints[{i}].name: {ep.name!r} is already the name of endpoints[{seen[ep.name]}]")
        elif ep.name:
            seen[ep.name] = i
    if out:
        return out
    out += problems(cfg.base_rule(), cfg.endpoints, "defaults.")
    for i, f in enumerate(cfg.folders):
        if f.endpoint is not None or f.second_opinion is not None or not out:
            out += problems(cfg.folder_rule(f), cfg.endpoints, f"folders[{i}].")
    return list(dict.fromkeys(out))
