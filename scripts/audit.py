#!/usr/bin/env python3
"""Supply-chain check of Cargo.lock.

1. RustSec advisories, offline: every crates.io package of Cargo.lock against a snapshot of the
   RustSec advisory database (default ../shared/advisory-db beside the repository; `--db PATH`
   or the environment variable FACENET_ADVISORY_DB choose another). A package version is
   affected by an advisory for its name unless it matches one of the advisory's `patched` or
   `unaffected` requirements; withdrawn advisories are skipped. Informational advisories
   (unmaintained, unsound, notice) count as findings too. An advisory is accepted only by an
   entry of audit-ignore.toml (repository root) with its id and a non-empty `why`:

       [[ignore]]
       id = "RUSTSEC-2024-0000"
       why = "what the crate is used for here and why the advisory does not apply"

   Ignore entries that match no package of Cargo.lock are reported, so stale ones get removed.
2. Unless `--offline`: every crates.io package of Cargo.lock against the crates.io index
   (network), reporting the versions their authors have yanked, and packages not from crates.io.

Requirements are matched as Cargo (the `semver` crate) matches them: comma-separated
comparators all hold; `>=`, `>`, `<`, `<=`, `=`, `^`, `~`, a bare version (caret), wildcards
(`*`, `1.*`, `1.2.x`), partial versions (`1`, `1.2`); caret keeps the leftmost non-zero part
(`^0.2.3` is `>=0.2.3, <0.3.0`, `^0.0.3` is `=0.0.3`). Versions are ordered by semver
precedence (build metadata ignored). A pre-release version (`1.0.0-rc.3`) matches a requirement
only if some comparator has a pre-release on the same major.minor.patch, as Cargo does: a
pre-release in Cargo.lock is then reported as affected unless a patched/unaffected requirement
names its release line's pre-releases, which errs on the side of reporting (cargo-audit orders
pre-releases by plain precedence instead). `[affected]` (os, arch, functions) is not used to
drop findings: an os/arch restriction is printed with the finding, for the ignore decision.

Exit status: 0 clean, 1 findings not ignored (or yanked packages), 2 usage or data errors.
Run: `python3 scripts/audit.py [--offline] [--db PATH] [--lock PATH] [--ignore-file PATH]`.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"


class AuditError(Exception):
    """Bad input (missing database, malformed ignore file, unparsable requirement): exit 2."""


# ---------------------------------------------------------------- semver


def _pre_key(pre: tuple) -> tuple:
    """Sort key of a pre-release: no pre-release sorts after any; numeric identifiers sort
    numerically and before alphanumeric ones; a shorter prefix sorts first."""
    if not pre:
        return (1,)
    return (0, tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in pre))


_NUM = r"(?:0|[1-9][0-9]*)"
_IDENT = r"[0-9A-Za-z-]+"
_VERSION_RE = re.compile(
    rf"^({_NUM})\.({_NUM})\.({_NUM})(?:-({_IDENT}(?:\.{_IDENT})*))?(?:\+({_IDENT}(?:\.{_IDENT})*))?$"
)


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: tuple = ()

    @classmethod
    def parse(cls, text: str) -> "Version":
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise AuditError(f"not a semver version: {text!r}")
        pre = tuple(m.group(4).split(".")) if m.group(4) else ()
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre)

    def key(self) -> tuple:
        return (self.major, self.minor, self.patch, _pre_key(self.pre))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + ("-" + ".".join(self.pre) if self.pre else "")


@dataclass(frozen=True)
class Comparator:
    op: str  # one of = > >= < <= ~ ^ and "*" (wildcard / partial exact)
    major: int | None  # None only for a bare `*`
    minor: int | None = None
    patch: int | None = None
    pre: tuple = ()

    def matches(self, v: Version) -> bool:
        op = self.op
        if self.major is None:
            return True
        if op in ("=", "*"):
            return self._exact(v)
        if op == ">":
            return self._greater(v)
        if op == ">=":
            return self._exact(v) or self._greater(v)
        if op == "<":
            return self._less(v)
        if op == "<=":
            return self._exact(v) or self._less(v)
        if op == "~":
            return self._tilde(v)
        return self._caret(v)

    # The cases below follow the semver crate (src/eval.rs) one for one.
    def _exact(self, v: Version) -> bool:
        if v.major != self.major:
            return False
        if self.minor is not None and v.minor != self.minor:
            return False
        if self.patch is not None and v.patch != self.patch:
            return False
        return v.pre == self.pre

    def _greater(self, v: Version) -> bool:
        if v.major != self.major:
            return v.major > self.major
        if self.minor is None:
            return False
        if v.minor != self.minor:
            return v.minor > self.minor
        if self.patch is None:
            return False
        if v.patch != self.patch:
            return v.patch > self.patch
        return _pre_key(v.pre) > _pre_key(self.pre)

    def _less(self, v: Version) -> bool:
        if v.major != self.major:
            return v.major < self.major
        if self.minor is None:
            return False
        if v.minor != self.minor:
            return v.minor < self.minor
        if self.patch is None:
            return False
        if v.patch != self.patch:
            return v.patch < self.patch
        return _pre_key(v.pre) < _pre_key(self.pre)

    def _tilde(self, v: Version) -> bool:
        if v.major != self.major:
            return False
        if self.minor is not None and v.minor != self.minor:
            return False
        if self.patch is not None and v.patch != self.patch:
            return v.patch > self.patch
        return _pre_key(v.pre) >= _pre_key(self.pre)

    def _caret(self, v: Version) -> bool:
        if v.major != self.major:
            return False
        if self.minor is None:
            return True
        if self.patch is None:
            return v.minor >= self.minor if self.major > 0 else v.minor == self.minor
        if self.major > 0:
            if v.minor != self.minor:
                return v.minor > self.minor
            if v.patch != self.patch:
                return v.patch > self.patch
        elif self.minor > 0:
            if v.minor != self.minor:
                return False
            if v.patch != self.patch:
                return v.patch > self.patch
        elif v.minor != self.minor or v.patch != self.patch:
            return False
        return _pre_key(v.pre) >= _pre_key(self.pre)

    def pre_compatible(self, v: Version) -> bool:
        return bool(self.pre) and (self.major, self.minor, self.patch) == (v.major, v.minor, v.patch)


_CMP_RE = re.compile(
    rf"^(>=|<=|>|<|=|\^|~)?\s*({_NUM}|[*xX])(?:\.({_NUM}|[*xX]))?(?:\.({_NUM}|[*xX]))?"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?(?:\+({_IDENT}(?:\.{_IDENT})*))?$"
)


def parse_comparator(text: str) -> Comparator:
    m = _CMP_RE.match(text.strip())
    if not m:
        raise AuditError(f"not a version requirement: {text!r}")
    op, parts, pre = m.group(1), [m.group(2), m.group(3), m.group(4)], m.group(5)
    wild = [p is not None and p in "*xX" for p in parts]
    if any(wild):
        first = wild.index(True)
        if any(p is not None and not w for p, w in zip(parts[first:], wild[first:])):
            raise AuditError(f"a number after a wildcard: {text!r}")
        parts = parts[:first] + [None] * (3 - first)
    nums = [int(p) if p is not None else None for p in parts]
    if (pre is not None) and nums[2] is None:
        raise AuditError(f"a pre-release on a partial version: {text!r}")
    if any(n is None for n in nums):
        # A partial or wildcard version: `1.*` / `1.2` with no operator is a wildcard (`=`).
        if nums[1] is None and nums[2] is not None:
            raise AuditError(f"not a version requirement: {text!r}")
        if op is None:
            op = "*" if any(wild) else "^"
        if nums[0] is None and op not in ("*", "=", "^", "~", ">="):
            raise AuditError(f"a bare wildcard with an operator that excludes everything: {text!r}")
    return Comparator(op or "^", nums[0], nums[1], nums[2], tuple(pre.split(".")) if pre else ())


class VersionReq:
    def __init__(self, text: str):
        self.text = text
        parts = [p for p in (s.strip() for s in text.split(",")) if p]
        if not parts:
            raise AuditError(f"empty version requirement: {text!r}")
        self.comparators = [parse_comparator(p) for p in parts]

    def matches(self, v: Version) -> bool:
        if not all(c.matches(v) for c in self.comparators):
            return False
        # Cargo: a pre-release matches only where a comparator opts into its release's pre-releases.
        return not v.pre or any(c.pre_compatible(v) for c in self.comparators)

    def __str__(self) -> str:
        return self.text


def matches(req: str, version: str) -> bool:
    return VersionReq(req).matches(Version.parse(version))


# ---------------------------------------------------------------- advisory database


@dataclass
class Advisory:
    id: str
    package: str
    kind: str  # vulnerability, unmaintained, unsound, notice
    title: str
    patched: list
    unaffected: list
    withdrawn: bool
    restriction: str  # "os: windows" etc., or ""
    path: Path

    def affects(self, v: Version) -> bool:
        return not any(r.matches(v) for r in self.patched + self.unaffected)


_FRONT_RE = re.compile(r"\A\s*```toml\s*\n(.*?)\n```[^\n]*\n?(.*)\Z", re.S)


def parse_advisory(path: Path) -> Advisory:
    text = path.read_text(encoding="utf-8")
    m = _FRONT_RE.match(text)
    if not m:
        raise AuditError(f"{path}: no ```toml front matter")
    try:
        data = tomllib.loads(m.group(1))
    except tomllib.TOMLDecodeError as e:
        raise AuditError(f"{path}: {e}") from None
    adv, vers, affected = data.get("advisory", {}), data.get("versions", {}), data.get("affected", {})
    title = next((ln[2:].strip() for ln in m.group(2).splitlines() if ln.startswith("# ")), "(no title)")
    try:
        patched = [VersionReq(r) for r in vers.get("patched", [])]
        unaffected = [VersionReq(r) for r in vers.get("unaffected", [])]
    except AuditError as e:
        raise AuditError(f"{path}: {e}") from None
    restriction = "; ".join(f"{k}: {', '.join(map(str, affected[k]))}" for k in ("os", "arch") if affected.get(k))
    return Advisory(
        id=adv["id"],
        package=adv["package"],
        kind=str(adv.get("informational") or "vulnerability").strip(),
        title=title,
        patched=patched,
        unaffected=unaffected,
        withdrawn=bool(adv.get("withdrawn")),
        restriction=restriction,
        path=path,
    )


def load_db(db: Path) -> tuple[dict, str]:
    """Advisories by package name (crates/ only; rust/ is about the toolchain), and a
    description of the snapshot ("commit date")."""
    if not (db / "crates").is_dir():
        raise AuditError(f"advisory database not found: {db} (no crates/ directory); "
                         "pass --db PATH or set FACENET_ADVISORY_DB")
    by_package: dict = {}
    for path in sorted((db / "crates").glob("*/*.md")):
        a = parse_advisory(path)
        by_package.setdefault(a.package, []).append(a)
    snapshot = "unknown snapshot"
    info = db / "SNAPSHOT.txt"
    if info.is_file():
        m = re.search(r"commit ([0-9a-f]{7,40})\s*\((\d{4}-\d{2}-\d{2})\)", info.read_text())
        if m:
            snapshot = f"{m.group(1)[:12]} {m.group(2)}"
    return by_package, snapshot


def load_ignores(path: Path) -> dict:
    """id -> why, from audit-ignore.toml (absent file: no ignores)."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise AuditError(f"{path}: {e}") from None
    unknown = set(data) - {"ignore"}
    if unknown:
        raise AuditError(f"{path}: unknown keys {sorted(unknown)} (only [[ignore]] entries)")
    ignores: dict = {}
    for n, entry in enumerate(data.get("ignore", []), 1):
        where = f"{path}: [[ignore]] entry {n}"
        if not isinstance(entry, dict):
            raise AuditError(f"{where}: not a table")
        extra = set(entry) - {"id", "why"}
        if extra:
            raise AuditError(f"{where}: unknown keys {sorted(extra)} (only id and why)")
        id_ = entry.get("id")
        if not isinstance(id_, str) or not re.fullmatch(r"RUSTSEC-\d{4}-\d{4}", id_):
            raise AuditError(f"{where}: id must be a RUSTSEC-YYYY-NNNN string, got {id_!r}")
        why = entry.get("why")
        if not isinstance(why, str) or not why.strip():
            raise AuditError(f"{where} ({id_}): a non-empty `why` is required")
        if id_ in ignores:
            raise AuditError(f"{where}: {id_} is ignored twice")
        ignores[id_] = " ".join(why.split())
    return ignores


def check_advisories(lock_path: Path, db: Path, ignore_path: Path) -> int:
    """Prints findings and the summary; returns the number of findings not ignored."""
    if not lock_path.is_file():
        raise AuditError(f"Cargo.lock not found: {lock_path}")
    packages = tomllib.loads(lock_path.read_text(encoding="utf-8")).get("package", [])
    by_package, snapshot = load_db(db)
    ignores = load_ignores(ignore_path)
    from_registry = [p for p in packages if p.get("source") == REGISTRY]
    all_ids = {a.id for advs in by_package.values() for a in advs}
    live = sum(not a.withdrawn for advs in by_package.values() for a in advs)

    found = ignored = 0
    used: set = set()
    for p in sorted(from_registry, key=lambda p: (p["name"], Version.parse(p["version"]).key())):
        version = Version.parse(p["version"])
        for a in by_package.get(p["name"], []):
            if a.withdrawn or not a.affects(version):
                continue
            found += 1
            patched = ", ".join(f'"{r}"' for r in a.patched) or "none"
            line = f"{a.id}  {p['name']} {p['version']}  {a.kind}  {a.title}  patched: {patched}"
            if a.restriction:
                line += f"  (only {a.restriction})"
            if a.id in ignores:
                ignored += 1
                used.add(a.id)
                print(f"ignored: {line}\n    why: {ignores[a.id]}")
            else:
                print(f"FOUND:   {line}")
    for id_ in sorted(set(ignores) - used):
        if id_ in all_ids:
            print(f"warning: audit-ignore.toml ignores {id_}, which matches no package of Cargo.lock "
                  "(stale: remove it)")
        else:
            print(f"warning: audit-ignore.toml ignores {id_}, which is not in the advisory database")
    print(f"advisories: {len(from_registry)} packages checked against {live} advisories "
          f"(snapshot {snapshot}), {found} found, {ignored} ignored")
    return found - ignored


# ---------------------------------------------------------------- yanked versions (network)


def index_path(name: str) -> str:
    n = name.lower()
    if len(n) <= 2:
        return f"{len(n)}/{n}"
    if len(n) == 3:
        return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"


def check_yanked(lock_path: Path) -> int:
    """Returns the number of yanked or missing packages (queries index.crates.io)."""
    import concurrent.futures
    import json
    import urllib.request

    def versions(name: str) -> dict:
        url = f"https://index.crates.io/{index_path(name)}"
        with urllib.request.urlopen(url, timeout=30) as f:
            return {e["vers"]: e for e in map(json.loads, f.read().decode().splitlines())}

    packages = tomllib.loads(lock_path.read_text(encoding="utf-8")).get("package", [])
    from_registry = [p for p in packages if p.get("source") == REGISTRY]
    other = [p for p in packages if "source" in p and p.get("source") != REGISTRY]
    names = sorted({p["name"] for p in from_registry})
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        index = dict(zip(names, pool.map(versions, names)))
    yanked = []
    for p in from_registry:
        entry = index[p["name"]].get(p["version"])
        if entry is None:
            yanked.append(f"{p['name']} {p['version']}: not in the index")
        elif entry.get("yanked"):
            yanked.append(f"{p['name']} {p['version']}: yanked")
    print(f"{len(from_registry)} packages ({len(names)} crates) from crates.io checked; "
          f"{len(yanked)} yanked or missing")
    for y in yanked:
        print("  " + y)
    for p in other:
        print(f"  not from crates.io: {p['name']} {p['version']} ({p['source']})")
    return len(yanked)


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--offline", action="store_true", help="skip the crates.io index (yanked) check")
    ap.add_argument("--db", type=Path, help="advisory-db snapshot (default: $FACENET_ADVISORY_DB, "
                    "else ../shared/advisory-db beside the repository)")
    ap.add_argument("--lock", type=Path, default=ROOT / "Cargo.lock")
    ap.add_argument("--ignore-file", type=Path, default=ROOT / "audit-ignore.toml")
    args = ap.parse_args(argv)
    db = args.db or Path(os.environ.get("FACENET_ADVISORY_DB") or ROOT.parent / "shared" / "advisory-db")
    status = 0
    try:
        print("== RustSec advisories (offline snapshot)")
        status |= check_advisories(args.lock, db, args.ignore_file) > 0
        if not args.offline:
            print("\n== crates.io index: yanked versions in Cargo.lock")
            status |= check_yanked(args.lock) > 0
    except AuditError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
