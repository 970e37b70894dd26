#!/usr/bin/env python3
"""Tests of scripts/audit.py: Cargo's requirement matching, checked by hand against the rules of
the semver crate, and the advisory check on a small fake database.

Run: `python3 scripts/test_audit.py` or `python3 -m unittest scripts/test_audit.py`.
"""
import contextlib
import io
import os
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import audit  # noqa: E402
from audit import AuditError, Version, matches  # noqa: E402


class Matching(unittest.TestCase):
    def check(self, req, yes=(), no=()):
        for v in yes:
            self.assertTrue(matches(req, v), f"{req!r} should match {v}")
        for v in no:
            self.assertFalse(matches(req, v), f"{req!r} should not match {v}")

    def test_caret(self):
        self.check("^1.2.3", yes=["1.2.3", "1.2.4", "1.9.0"], no=["1.2.2", "2.0.0", "0.9.9"])
        self.check("^1.2", yes=["1.2.0", "1.5.0"], no=["1.1.9", "2.0.0"])
        self.check("^1", yes=["1.0.0", "1.99.0"], no=["0.9.0", "2.0.0"])
        self.check("^ 0.3.1", yes=["0.3.1", "0.3.9"], no=["0.3.0", "0.4.0"])

    def test_caret_zero(self):
        # ^0.x keeps the minor, ^0.0.x the patch.
        self.check("^0.2.3", yes=["0.2.3", "0.2.9"], no=["0.2.2", "0.3.0", "1.0.0"])
        self.check("^0.0.3", yes=["0.0.3"], no=["0.0.2", "0.0.4", "0.1.0"])
        self.check("^0.0", yes=["0.0.0", "0.0.7"], no=["0.1.0"])
        self.check("^0", yes=["0.0.1", "0.9.0"], no=["1.0.0"])

    def test_bare_is_caret(self):
        self.check("0.13.10", yes=["0.13.10", "0.13.11"], no=["0.13.9", "0.14.0"])
        self.check("1.2.3", yes=["1.4.0"], no=["2.0.0", "1.2.2"])

    def test_tilde(self):
        self.check("~1.2.3", yes=["1.2.3", "1.2.9"], no=["1.2.2", "1.3.0"])
        self.check("~1.2", yes=["1.2.0", "1.2.9"], no=["1.3.0", "1.1.0"])
        self.check("~1", yes=["1.0.0", "1.9.0"], no=["2.0.0"])
        self.check("~0.2.3", yes=["0.2.5"], no=["0.3.0"])

    def test_exact(self):
        self.check("=0.2.3", yes=["0.2.3"], no=["0.2.4", "0.2.2"])
        self.check("=1.2", yes=["1.2.0", "1.2.7"], no=["1.3.0"])

    def test_comparisons(self):
        self.check(">= 1.2.3", yes=["1.2.3", "2.0.0"], no=["1.2.2"])
        self.check(">=0.4.20", yes=["0.4.20", "0.4.45"], no=["0.4.19"])
        self.check(">= 1.2", yes=["1.2.0", "1.3.0"], no=["1.1.9"])
        self.check(">= 0", yes=["0.0.0", "5.0.0"])
        self.check("> 1.2.3", yes=["1.2.4"], no=["1.2.3"])
        self.check("> 1.2", yes=["1.3.0"], no=["1.2.9"])  # > 1.2 means >= 1.3.0
        self.check("> 1", yes=["2.0.0"], no=["1.9.9"])
        self.check("< 0.1.0", yes=["0.0.9"], no=["0.1.0", "0.2.0"])
        self.check("< 1.2", yes=["1.1.9"], no=["1.2.0"])
        self.check("<= 0.5.11", yes=["0.5.11", "0.5.0"], no=["0.5.12"])
        self.check("<= 1.2", yes=["1.2.9"], no=["1.3.0"])  # <= 1.2 means < 1.3.0

    def test_ranges(self):
        self.check(">= 0.3, < 0.3.8", yes=["0.3.0", "0.3.7"], no=["0.2.9", "0.3.8"])
        self.check("< 0.10.0, >= 0.9.3", yes=["0.9.3", "0.9.5"], no=["0.9.2", "0.10.0"])
        self.check(">= 0.9.7, <0.10.0", yes=["0.9.7"], no=["0.10.4"])
        self.check(">= 36.0.7, < 37.0.0", yes=["36.1.0"], no=["36.0.6", "37.0.0"])

    def test_wildcards(self):
        self.check("*", yes=["0.0.1", "3.4.5"], no=["1.0.0-rc.1"])
        self.check("1.*", yes=["1.0.0", "1.9.9"], no=["0.9.9", "2.0.0"])
        self.check("1.2.x", yes=["1.2.0", "1.2.9"], no=["1.3.0"])
        self.check("0.*", yes=["0.5.0"], no=["1.0.0"])

    def test_precedence(self):
        # The example of semver.org, item 11, in ascending order.
        order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
                 "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"]
        keys = [Version.parse(v).key() for v in order]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(len(set(keys)), len(keys))
        # Build metadata is ignored.
        self.assertEqual(Version.parse("0.38.0+1.3.281").key(), Version.parse("0.38.0").key())

    def test_prerelease(self):
        # A pre-release matches only a requirement that names a pre-release of the same x.y.z.
        self.check(">= 0.3.0-rc.2", yes=["0.3.0-rc.2", "0.3.0-rc.10", "0.3.0", "0.4.0"],
                   no=["0.3.0-rc.1", "0.3.0-beta.9", "0.3.1-rc.1"])
        self.check(">= 0.9.1", yes=["1.0.0"], no=["1.0.0-rc.3"])  # Cargo's opt-in rule
        self.check(">= 1.0.0", no=["1.0.0-rc.3"])
        self.check("^1.0.0-alpha", yes=["1.0.0-alpha.1", "1.0.0", "1.5.0"], no=["1.0.0-0", "1.5.0-beta"])
        self.check("< 1.0.0-alpha.1", yes=["0.9.9", "1.0.0-alpha"], no=["1.0.0-alpha.1", "1.0.0"])
        self.check(">= 0.103.12, < 0.104.0-alpha.1", yes=["0.103.17", "0.104.0-alpha.0"],
                   no=["0.104.0-alpha.1", "0.104.0"])
        self.check("< 1.0.0-0", yes=["0.9.9"], no=["1.0.0-0", "1.0.0"])
        self.check("=23.1.0-4", yes=["23.1.0-4"], no=["23.1.0-5", "23.1.0"])
        self.check(">= 0.33.1", yes=["0.38.0+1.3.281"])

    def test_errors(self):
        for bad in ["", "1.2.3.4", ">=", "1.*.3", "^1.2-rc", "< *", "01.2.3", "a.b.c"]:
            with self.assertRaises(AuditError, msg=repr(bad)):
                audit.VersionReq(bad)
        for bad in ["1.2", "1.2.3-", "v1.2.3"]:
            with self.assertRaises(AuditError, msg=repr(bad)):
                Version.parse(bad)


def advisory(id_, package, patched=(), unaffected=(), extra=""):
    q = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    return textwrap.dedent(f"""\
        ```toml
        [advisory]
        id = "{id_}"
        package = "{package}"
        date = "2099-01-01"
        {extra}

        [versions]
        patched = {q(patched)}
        unaffected = {q(unaffected)}
        ```

        # Title of {id_}

        Text.
        """)


REG = audit.REGISTRY


class FakeDb(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        db = self.dir / "db"
        files = {
            "foo/RUSTSEC-2099-0001.md": advisory("RUSTSEC-2099-0001", "foo", patched=[">= 1.2.0"]),
            "bar/RUSTSEC-2099-0002.md": advisory("RUSTSEC-2099-0002", "bar", patched=[">= 0.6.0"],
                                                 unaffected=["< 0.5.0"]),
            "baz/RUSTSEC-2099-0003.md": advisory("RUSTSEC-2099-0003", "baz",
                                                 extra='withdrawn = "2099-02-01"'),
            "qux/RUSTSEC-2099-0004.md": advisory("RUSTSEC-2099-0004", "qux",
                                                 extra='informational = "unmaintained"'),
            "local/RUSTSEC-2099-0005.md": advisory("RUSTSEC-2099-0005", "local"),
            "foo/RUSTSEC-2099-0006.md": advisory("RUSTSEC-2099-0006", "foo", patched=[">= 9.0.0"],
                                                 unaffected=["< 1.0.0"]),
        }
        for rel, text in files.items():
            (db / "crates" / rel).parent.mkdir(parents=True, exist_ok=True)
            (db / "crates" / rel).write_text(text)
        (db / "rust" / "std").mkdir(parents=True)
        (db / "rust" / "std" / "RUSTSEC-2099-0100.md").write_text(advisory("RUSTSEC-2099-0100", "std"))
        (db / "SNAPSHOT.txt").write_text("snapshot, commit 0123456789abcdef0123 (2099-03-04), files\n")
        self.db = db
        pkgs = [("foo", "1.1.0", REG), ("foo", "1.2.5", REG), ("bar", "0.4.0", REG),
                ("bar", "0.7.0", REG), ("baz", "1.0.0", REG), ("qux", "0.1.0", REG),
                ("local", "0.1.0", None), ("unrelated", "2.0.0", REG)]
        lock = "version = 4\n"
        for name, version, source in pkgs:
            lock += f'\n[[package]]\nname = "{name}"\nversion = "{version}"\n'
            lock += f'source = "{source}"\n' if source else ""
        self.lock = self.dir / "Cargo.lock"
        self.lock.write_text(lock)
        self.ignore = self.dir / "audit-ignore.toml"

    def tearDown(self):
        self.tmp.cleanup()

    def run_audit(self, ignore=None, db=None):
        if ignore is not None:
            self.ignore.write_text(textwrap.dedent(ignore))
        out, err = io.StringIO(), io.StringIO()
        args = ["--offline", "--db", str(db or self.db), "--lock", str(self.lock),
                "--ignore-file", str(self.ignore)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = audit.main(args)
        return status, out.getvalue(), err.getvalue()

    def test_findings(self):
        status, out, _ = self.run_audit()
        self.assertEqual(status, 1)
        found = [ln[6:].strip().split("  ")[:2] for ln in out.splitlines() if ln.startswith("FOUND:")]
        # foo 1.1.0 is not patched (0001), foo 1.2.5 is; both are affected by 0006; bar 0.4.0 is
        # unaffected and 0.7.0 patched; baz's advisory is withdrawn; local is not from crates.io.
        self.assertEqual(found, [["RUSTSEC-2099-0001", "foo 1.1.0"], ["RUSTSEC-2099-0006", "foo 1.1.0"],
                                 ["RUSTSEC-2099-0006", "foo 1.2.5"], ["RUSTSEC-2099-0004", "qux 0.1.0"]], out)
        self.assertIn("FOUND:   RUSTSEC-2099-0001  foo 1.1.0  vulnerability  Title of RUSTSEC-2099-0001  "
                      'patched: ">= 1.2.0"\n', out)
        self.assertIn("RUSTSEC-2099-0004  qux 0.1.0  unmaintained  Title of RUSTSEC-2099-0004  patched: none", out)
        self.assertNotIn("bar", out.replace("advisories:", ""))
        self.assertNotIn("baz", out)
        self.assertNotIn("local", out)
        self.assertIn("advisories: 7 packages checked against 5 advisories "
                      "(snapshot 0123456789ab 2099-03-04), 4 found, 0 ignored", out)

    def test_ignores(self):
        status, out, _ = self.run_audit("""\
            [[ignore]]
            id = "RUSTSEC-2099-0004"
            why = "qux is only used in a build script"
            """)
        self.assertEqual(status, 1)  # foo's findings remain
        self.assertIn("ignored: RUSTSEC-2099-0004  qux 0.1.0  unmaintained", out)
        self.assertIn("    why: qux is only used in a build script", out)
        self.assertIn("4 found, 1 ignored", out)

    def test_all_ignored_and_stale(self):
        status, out, _ = self.run_audit("""\
            [[ignore]]
            id = "RUSTSEC-2099-0001"
            why = "a"
            [[ignore]]
            id = "RUSTSEC-2099-0004"
            why = "b"
            [[ignore]]
            id = "RUSTSEC-2099-0006"
            why = "c"
            [[ignore]]
            id = "RUSTSEC-2099-0002"
            why = "bar was updated since"
            [[ignore]]
            id = "RUSTSEC-2000-0000"
            why = "typo"
            """)
        self.assertEqual(status, 0, out)
        self.assertIn("4 found, 4 ignored", out)
        self.assertIn("warning: audit-ignore.toml ignores RUSTSEC-2099-0002, which matches no package", out)
        self.assertIn("warning: audit-ignore.toml ignores RUSTSEC-2000-0000, which is not in the advisory", out)

    def test_ignore_without_why(self):
        for entry in ['id = "RUSTSEC-2099-0004"\n', 'id = "RUSTSEC-2099-0004"\nwhy = "  "\n']:
            status, _, err = self.run_audit("[[ignore]]\n" + entry)
            self.assertEqual(status, 2)
            self.assertIn("RUSTSEC-2099-0004", err)
            self.assertIn("non-empty `why`", err)
        status, _, err = self.run_audit('[[ignore]]\nid = "RUSTSEC-2099-0004"\nwhy = "x"\nreason = "y"\n')
        self.assertEqual(status, 2)
        self.assertIn("unknown keys", err)

    def test_missing_db(self):
        missing = self.dir / "no-such-db"
        status, out, err = self.run_audit(db=missing)
        self.assertEqual(status, 2)
        self.assertIn(str(missing), err)

    def test_db_from_environment(self):
        old = os.environ.get("FACENET_ADVISORY_DB")
        os.environ["FACENET_ADVISORY_DB"] = str(self.db)
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                status = audit.main(["--offline", "--lock", str(self.lock), "--ignore-file",
                                     str(self.ignore)])
        finally:
            if old is None:
                del os.environ["FACENET_ADVISORY_DB"]
            else:
                os.environ["FACENET_ADVISORY_DB"] = old
        self.assertEqual(status, 1)
        self.assertIn("4 found", out.getvalue())


if __name__ == "__main__":
    unittest.main()
